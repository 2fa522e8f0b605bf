// Bots: each bot's state, its modules' states and its last error (what GET /status says), the
// enable / disable / reload buttons, and the problems in its files (file and JSON pointer).
(function () {
  'use strict';
  const A = window.BPAdmin;
  const el = A.el;
  const REFRESH_MS = 5000;

  const view = {root: null, timer: null, open: new Set(), problems: {}, filter: ''};

  function moduleChips(modules) {
    return Object.entries(modules || {}).map(([name, status]) => el('span', {
      class: 'chip state-' + status.state, title: status.reason || null,
    }, name + ' ' + status.state, status.reason ? el('span', {class: 'reason'}, ': ' + status.reason) : null));
  }

  function failedCount(failed) {
    if (!failed) return '';
    const total = (failed.incoming || 0) + (failed.outgoing || 0);
    return total ? String(total) : '';
  }

  async function act(botId, action) {
    const result = await A.api('POST', '/api/v1/admin/bots/' + A.path(botId, action));
    A.notice(botId + ': ' + result.state + (result.error ? ' (' + result.error + ')' : ''),
      result.state === 'error' ? 'error' : 'ok');
    await refresh();
  }

  async function loadProblems(botId) {
    view.problems[botId] = {loading: true};
    render(view.last);
    try {
      view.problems[botId] = await A.api('GET', '/api/v1/admin/bots/' + A.path(botId, 'problems'));
    } catch (error) {
      view.problems[botId] = {error: error.message};
    }
    render(view.last);
  }

  function problemsRow(botId) {
    const found = view.problems[botId];
    let body;
    if (!found || found.loading) body = el('p', {class: 'muted'}, 'Checking the files…');
    else if (found.error) body = el('p', {class: 'error'}, found.error);
    else if (!found.problems.length) body = el('p', {class: 'ok-text'}, 'No problems in this bot\'s files.');
    else {
      body = el('ul', {class: 'problems'}, found.problems.map((p) => el('li', {},
        el('code', {class: 'where'}, p.file + (p.pointer ? '#' + p.pointer : '')), ' ',
        el('span', {}, p.message), p.hint ? el('span', {class: 'muted'}, ' — ' + p.hint) : null)));
    }
    return el('tr', {class: 'details'}, el('td', {colspan: 6}, body));
  }

  function botRows(botId, status, failed) {
    const disabled = status.state === 'disabled';
    const open = view.open.has(botId);
    const row = el('tr', {dataset: {bot: botId}, class: 'bot-row'},
      el('td', {class: 'bot-id'}, botId),
      el('td', {}, el('span', {class: 'badge state-' + status.state}, status.state)),
      el('td', {}, el('div', {class: 'chips'}, moduleChips(status.modules))),
      el('td', {class: 'error-text'}, status.error || ''),
      el('td', {class: 'num', title: failed ? 'incoming ' + failed.incoming + ', outgoing ' + failed.outgoing : null},
        failedCount(failed)),
      el('td', {class: 'actions'},
        disabled ? A.button('Enable', () => act(botId, 'enable'), {class: 'enable'})
          : A.button('Disable', () => act(botId, 'disable'), {class: 'disable'}),
        A.button('Reload', () => act(botId, 'reload'), {class: 'reload'}),
        A.button(open ? 'Hide problems' : 'Problems', async () => {
          if (view.open.has(botId)) {
            view.open.delete(botId);
            render(view.last);
          } else {
            view.open.add(botId);
            await loadProblems(botId);
          }
        }, {class: 'problems-button'})));
    return open ? [row, problemsRow(botId)] : [row];
  }

  function render(status) {
    if (!status || !view.root) return;
    view.last = status;
    const bots = status.bots || {};
    const failed = (status.failedEvents && status.failedEvents.bots) || {};
    const ids = Object.keys(bots).sort();
    const shown = ids.filter((id) => id.includes(view.filter));
    const body = el('tbody', {}, shown.map((id) => botRows(id, bots[id], failed[id])));
    const table = view.root.querySelector('table.bots');
    table.replaceChild(body, table.tBodies[0]);
    const summary = view.root.querySelector('.summary');
    summary.textContent = ids.length + (ids.length === 1 ? ' bot, ' : ' bots, ') + ids.filter((id) => bots[id].state === 'mounted').length +
      ' mounted · botpress-py ' + (status.version || '') + ' · up ' + Math.round(status.uptime || 0) + ' s';
    const errors = view.root.querySelector('.module-errors');
    A.clear(errors);
    for (const problem of status.moduleErrors || []) errors.append(el('li', {class: 'error-text'}, problem));
  }

  async function refresh() {
    const response = await fetch('/status', {cache: 'no-store'});
    const status = await response.json();
    A.botIds = Object.keys(status.bots || {}).sort();
    render(status);
    return status;
  }

  function build(root) {
    view.root = root;
    const filter = el('input', {type: 'search', placeholder: 'Filter bots', class: 'filter', 'aria-label': 'Filter bots'});
    filter.addEventListener('input', () => {
      view.filter = filter.value.trim();
      render(view.last);
    });
    root.append(
      el('div', {class: 'toolbar'}, el('h2', {}, 'Bots'), filter, el('span', {class: 'summary muted'})),
      el('ul', {class: 'module-errors'}),
      el('table', {class: 'bots'},
        el('thead', {}, el('tr', {}, ['Bot', 'State', 'Modules', 'Last error', 'Failed events', ''].map(
          (h) => el('th', {}, h)))),
        el('tbody')));
  }

  A.views = A.views || {};
  A.views.bots = {
    build: build,
    refresh: refresh,
    show() {
      refresh().catch((error) => A.notice(error.message, 'error'));
      view.timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
    },
    hide() {
      clearInterval(view.timer);
    },
  };
})();
