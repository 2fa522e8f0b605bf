// The admin page's small toolkit: building DOM from data (text nodes only, never HTML), and
// calling the admin API with the session's CSRF token.
(function () {
  'use strict';
  const A = (window.BPAdmin = window.BPAdmin || {});

  // el('td', {class: 'x', title: text, onclick: fn}, child, 'text', ...): every string becomes a
  // text node and every attribute value a plain string, so nothing from a bot or a user can
  // become markup. No caller sets href or src from data.
  A.el = function (tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  };

  A.clear = function (node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  A.time = function (ms) {
    if (!ms) return '';
    const date = new Date(ms);
    return date.toLocaleDateString() === new Date().toLocaleDateString()
      ? date.toLocaleTimeString() : date.toLocaleString();
  };

  A.notice = function (text, kind) {
    const box = document.getElementById('notice');
    box.textContent = text || '';
    box.className = 'notice' + (kind ? ' ' + kind : '');
    box.hidden = !text;
  };

  // One option per value; keeps the selection when it is still offered.
  A.fillSelect = function (select, values, allLabel) {
    const current = select.value;
    A.clear(select);
    if (allLabel) select.append(A.el('option', {value: ''}, allLabel));
    for (const value of values) select.append(A.el('option', {value: value}, value));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };

  A.csrf = '';

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }
  A.ApiError = ApiError;

  // fetch() of an admin route: JSON in and out; the CSRF token on every change. A 401 means the
  // session ended (logout elsewhere, expiry): back to the login form.
  A.api = async function (method, url, body) {
    const headers = {Accept: 'application/json'};
    if (method !== 'GET') headers['X-CSRF-Token'] = A.csrf;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url, {
      method: method, headers: headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401 && A.signedOut) A.signedOut('Your session ended: log in again.');
      const message = (data && data.error) || 'HTTP ' + response.status;
      throw new ApiError(data && data.hint ? message + ' (' + data.hint + ')' : message, response.status, data);
    }
    return data;
  };

  A.query = function (params) {
    const parts = [];
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') {
        parts.push(encodeURIComponent(key) + '=' + encodeURIComponent(value));
      }
    }
    return parts.length ? '?' + parts.join('&') : '';
  };

  A.path = function (...segments) {
    return segments.map((s) => encodeURIComponent(s)).join('/');
  };

  // A button that calls `action`, disabled while it runs; a failure shows in the notice line.
  A.button = function (label, action, props) {
    const button = A.el('button', Object.assign({type: 'button'}, props || {}), label);
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await action();
      } catch (error) {
        A.notice(error.message, 'error');
      } finally {
        button.disabled = false;
      }
    });
    return button;
  };

  // Bot ids known to the server, for the pickers of every view.
  A.botIds = [];
})();
