// Failed events: incoming events whose processing gave up and outgoing ones that could not be
// delivered, with retry and discard (one, or every failed event of a bot).
(function () {
  'use strict';
  const A = window.BPAdmin;
  const el = A.el;

  const view = {root: null, events: [], next: null};

  function controls() {
    return {
      bot: view.root.querySelector('select.bot'),
      direction: view.root.querySelector('select.direction'),
      list: view.root.querySelector('table.failed tbody'),
      more: view.root.querySelector('button.more'),
      bulk: view.root.querySelector('.bulk'),
    };
  }

  async function act(event, action) {
    const result = await A.api('POST', '/api/v1/admin/events/' + A.path(event.id, action));
    A.notice((action === 'retry' ? 'Retried ' : 'Discarded ') + event.direction + ' event ' + event.id +
      (result && result.status ? ' (now ' + result.status + ')' : ''), 'ok');
    await load(false);
  }

  async function bulk(action) {
    const c = controls();
    const result = await A.api('POST', '/api/v1/admin/bots/' + A.path(c.bot.value, 'events', 'failed', action) +
      A.query({direction: c.direction.value}));
    A.notice(c.bot.value + ': ' + JSON.stringify(result), 'ok');
    await load(false);
  }

  function row(e) {
    return el('tr', {class: 'failed-event', dataset: {event: e.id}},
      el('td', {}, A.time(e.failedAt || e.createdOn)),
      el('td', {}, e.botId),
      el('td', {}, e.direction),
      el('td', {}, e.channel),
      el('td', {class: 'mono'}, e.userId),
      el('td', {}, e.type),
      el('td', {class: 'preview'}, e.preview || ''),
      el('td', {class: 'num'}, String(e.attempts)),
      el('td', {class: 'error-text'}, e.error || ''),
      el('td', {class: 'actions'},
        A.button('Retry', () => act(e, 'retry'), {class: 'retry'}),
        A.button('Discard', () => act(e, 'discard'), {class: 'discard'})));
  }

  function render() {
    const c = controls();
    A.clear(c.list);
    if (!view.events.length) c.list.append(el('tr', {}, el('td', {colspan: 10, class: 'muted'}, 'No failed events.')));
    for (const e of view.events) c.list.append(row(e));
    c.more.hidden = !view.next;
    c.bulk.hidden = !c.bot.value || !view.events.length;
  }

  async function load(append) {
    const c = controls();
    const url = '/api/v1/admin/events/failed' + A.query({
      bot: c.bot.value, direction: c.direction.value, cursor: append ? view.next : null, limit: 100});
    const page = await A.api('GET', url);
    view.events = append ? view.events.concat(page.events) : page.events;
    view.next = page.nextCursor;
    render();
  }

  function build(root) {
    view.root = root;
    const bot = el('select', {class: 'bot', 'aria-label': 'Bot'});
    const direction = el('select', {class: 'direction', 'aria-label': 'Direction'},
      el('option', {value: ''}, 'Both directions'), el('option', {value: 'incoming'}, 'Incoming'),
      el('option', {value: 'outgoing'}, 'Outgoing'));
    const reload = () => load(false).catch((error) => A.notice(error.message, 'error'));
    bot.addEventListener('change', reload);
    direction.addEventListener('change', reload);
    root.append(
      el('div', {class: 'toolbar'}, el('h2', {}, 'Failed events'), bot, direction,
        A.button('Refresh', () => load(false)),
        el('span', {class: 'bulk', hidden: true},
          A.button('Retry all of this bot', () => bulk('retry')),
          A.button('Discard all of this bot', () => bulk('discard')))),
      el('p', {class: 'muted'}, 'Processing gave up on an incoming event after its retries, or an outgoing ' +
        'event could not be delivered. Retry puts it back in the queue; discard gives up on it for good.'),
      el('table', {class: 'failed'},
        el('thead', {}, el('tr', {}, ['Failed', 'Bot', 'Direction', 'Channel', 'User', 'Type', 'Text', 'Attempts',
          'Error', ''].map((h) => el('th', {}, h)))),
        el('tbody')),
      A.button('More', () => load(true), {class: 'more', hidden: true}));
  }

  A.views.failed = {
    build: build,
    async show() {
      if (!A.botIds.length) await A.views.bots.refresh();
      A.fillSelect(controls().bot, A.botIds, 'All bots');
      await load(false);
    },
    hide() {},
  };
})();
