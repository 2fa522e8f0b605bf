// The admin page's start: log in (or resume the session), switch views by the URL's #fragment,
// log out. The token is sent once, to POST /admin/login; the page keeps only the CSRF token.
(function () {
  'use strict';
  const A = window.BPAdmin;
  const VIEWS = ['bots', 'conversations', 'failed', 'live'];
  let current = null;
  let built = false;

  function byId(id) {
    return document.getElementById(id);
  }

  function showLogin(message) {
    clearTimeout(expiry);
    if (current) A.views[current].hide();
    current = null;
    A.csrf = '';
    byId('app').hidden = true;
    byId('tabs').hidden = true;
    byId('logout').hidden = true;
    byId('session-info').textContent = '';
    byId('login').hidden = false;
    byId('login-error').textContent = message || '';
    byId('token').focus();
  }

  A.signedOut = showLogin;

  // setTimeout's longest wait (about 24.8 days); a longer session is re-checked then.
  const MAX_TIMER_MS = 2147483647;
  let expiry = null;

  function startApp(session) {
    A.csrf = session.csrf;
    clearTimeout(expiry);
    expiry = setTimeout(() => showLogin('Your session expired: log in again.'),
      Math.min(MAX_TIMER_MS, Math.max(0, session.expiresAt - Date.now())));
    byId('login').hidden = true;
    byId('app').hidden = false;
    byId('tabs').hidden = false;
    byId('logout').hidden = false;
    byId('session-info').textContent = 'signed in until ' + new Date(session.expiresAt).toLocaleString();
    if (!built) {
      for (const name of VIEWS) A.views[name].build(byId('view-' + name));
      built = true;
    }
    route();
  }

  function route() {
    if (byId('app').hidden) return;
    const wanted = (location.hash || '#bots').slice(1);
    const name = VIEWS.includes(wanted) ? wanted : 'bots';
    if (name === current) return;
    if (current) A.views[current].hide();
    current = name;
    A.notice('');
    for (const other of VIEWS) byId('view-' + other).hidden = other !== name;
    for (const link of byId('tabs').querySelectorAll('a')) {
      link.classList.toggle('active', link.dataset.view === name);
    }
    Promise.resolve(A.views[name].show()).catch((error) => A.notice(error.message, 'error'));
  }

  async function login(event) {
    event.preventDefault();
    const input = byId('token');
    const button = event.target.querySelector('button');
    button.disabled = true;
    byId('login-error').textContent = '';
    try {
      const session = await A.api('POST', '/admin/login', {token: input.value});
      input.value = '';
      startApp(session);
    } catch (error) {
      byId('login-error').textContent = error.status === 429 ? error.message
        : error.status === 403 ? 'Wrong token. ' + ((error.body && error.body.hint) || '') : error.message;
    } finally {
      button.disabled = false;
    }
  }

  async function logout() {
    try {
      await A.api('POST', '/admin/logout');
    } finally {
      showLogin('Logged out.');
    }
  }

  async function start() {
    byId('login-form').addEventListener('submit', login);
    byId('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', route);
    const response = await fetch('/admin/session', {credentials: 'same-origin', cache: 'no-store'});
    const session = response.ok ? await response.json() : {authenticated: false};
    if (session.authenticated) startApp(session);
    else showLogin('');
  }

  start().catch((error) => showLogin(error.message));
})();
