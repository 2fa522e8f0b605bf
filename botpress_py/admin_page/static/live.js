// Live: events in and out as they happen, over a WebSocket, filtered by bot. The server sends a
// summary of each event (a masked one without its text) and says how many the page missed
// when it fell behind.
(function () {
  'use strict';
  const A = window.BPAdmin;
  const el = A.el;
  const MAX_ROWS = 500;
  const RETRY_MS = [500, 1000, 2000, 5000];

  const view = {root: null, socket: null, wanted: false, retries: 0, timer: null, paused: false, missed: 0};

  function controls() {
    return {
      bot: view.root.querySelector('select.bot'),
      list: view.root.querySelector('table.live tbody'),
      state: view.root.querySelector('.live-state'),
      missed: view.root.querySelector('.missed'),
      pause: view.root.querySelector('button.pause'),
    };
  }

  function setState(text, kind) {
    const box = controls().state;
    box.textContent = text;
    box.className = 'live-state badge ' + kind;
  }

  function eventRow(e) {
    const arrow = e.direction === 'incoming' ? '→ in' : '← out';
    return el('tr', {class: 'live-event stage-' + e.stage + ' ' + e.direction, dataset: {event: e.id}},
      el('td', {}, new Date().toLocaleTimeString()),
      el('td', {}, el('span', {class: 'badge stage ' + e.stage}, e.stage)),
      el('td', {}, arrow),
      el('td', {}, e.botId),
      el('td', {}, e.channel),
      el('td', {class: 'mono'}, e.userId),
      el('td', {}, e.type),
      el('td', {class: 'preview'}, e.preview,
        e.masked ? el('span', {class: 'badge masked-badge', title: 'masked (data protection)'}, 'masked') : null));
  }

  function onMessage(message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    const c = controls();
    if (data.type === 'ready' || data.type === 'filter') {
      setState('connected' + (data.bot ? ' · ' + data.bot : ' · every bot'), 'ok');
    } else if (data.type === 'dropped') {
      view.missed += data.count;
      c.missed.textContent = view.missed + ' events missed (the page fell behind)';
      c.missed.hidden = false;
    } else if (data.type === 'event' && !view.paused) {
      c.list.prepend(eventRow(data.event));
      while (c.list.rows.length > MAX_ROWS) c.list.deleteRow(-1);
    }
  }

  function connect() {
    if (!view.wanted || view.socket) return;
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const url = scheme + location.host + '/api/v1/admin/live' + A.query({csrf: A.csrf, bot: controls().bot.value});
    const socket = (view.socket = new WebSocket(url));
    setState('connecting', 'warn');
    socket.addEventListener('open', () => {
      view.retries = 0;
    });
    socket.addEventListener('message', onMessage);
    socket.addEventListener('close', (event) => {
      view.socket = null;
      if (event.code === 4401) {
        setState('session ended', 'error');
        if (A.signedOut) A.signedOut('Your session ended: log in again.');
        return;
      }
      if (!view.wanted) return;
      setState('reconnecting', 'warn');
      const wait = RETRY_MS[Math.min(view.retries++, RETRY_MS.length - 1)];
      view.timer = setTimeout(connect, wait);
    });
  }

  function disconnect() {
    view.wanted = false;
    clearTimeout(view.timer);
    if (view.socket) view.socket.close(1000);
    view.socket = null;
  }

  function build(root) {
    view.root = root;
    const bot = el('select', {class: 'bot', 'aria-label': 'Bot'});
    bot.addEventListener('change', () => {
      if (view.socket && view.socket.readyState === WebSocket.OPEN) {
        view.socket.send(JSON.stringify({type: 'filter', bot: bot.value || null}));
      }
    });
    const pause = A.button('Pause', async () => {
      view.paused = !view.paused;
      pause.textContent = view.paused ? 'Resume' : 'Pause';
    }, {class: 'pause'});
    root.append(
      el('div', {class: 'toolbar'}, el('h2', {}, 'Live'), bot, pause,
        A.button('Clear', async () => {
          A.clear(controls().list);
          view.missed = 0;
          controls().missed.hidden = true;
        }),
        el('span', {class: 'live-state badge'}, 'not connected'),
        el('span', {class: 'missed error-text', hidden: true})),
      el('table', {class: 'live'},
        el('thead', {}, el('tr', {}, ['Time', 'Stage', 'Direction', 'Bot', 'Channel', 'User', 'Type', 'Text'].map(
          (h) => el('th', {}, h)))),
        el('tbody')));
  }

  A.views.live = {
    build: build,
    async show() {
      if (!A.botIds.length) await A.views.bots.refresh();
      A.fillSelect(controls().bot, A.botIds, 'All bots');
      view.wanted = true;
      connect();
    },
    hide: disconnect,
  };
})();
