// Conversations: a bot's conversations by channel, most recent first, and a conversation's
// history as storage holds it (a masked message shows its mask, never its text).
(function () {
  'use strict';
  const A = window.BPAdmin;
  const el = A.el;

  const view = {root: null, rows: [], next: null, channels: new Set(), open: null, messages: [], earlier: null};

  function controls() {
    return {
      bot: view.root.querySelector('select.bot'),
      channel: view.root.querySelector('select.channel'),
      list: view.root.querySelector('table.conversations tbody'),
      more: view.root.querySelector('button.more'),
      history: view.root.querySelector('.history'),
    };
  }

  function conversationRow(c) {
    const arrow = c.lastDirection === 'outgoing' ? '← ' : c.lastDirection === 'incoming' ? '→ ' : '';
    const row = el('tr', {class: 'conversation', tabindex: 0},
      el('td', {}, A.time(c.lastEventAt)),
      el('td', {}, c.channel),
      el('td', {class: 'mono'}, c.userId),
      el('td', {class: 'mono'}, c.threadId || ''),
      el('td', {class: 'preview'}, arrow + (c.lastPreview || '')));
    const open = () => openConversation(c);
    row.addEventListener('click', open);
    row.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') open();
    });
    return row;
  }

  function renderList() {
    const c = controls();
    A.clear(c.list);
    if (!view.rows.length) c.list.append(el('tr', {}, el('td', {colspan: 5, class: 'muted'}, 'No conversations.')));
    for (const row of view.rows) c.list.append(conversationRow(row));
    c.more.hidden = !view.next;
    A.fillSelect(c.channel, [...view.channels].sort(), 'All channels');
  }

  async function loadList(append) {
    const c = controls();
    const bot = c.bot.value;
    if (!bot) return;
    const url = '/api/v1/admin/bots/' + A.path(bot, 'conversations') +
      A.query({channel: c.channel.value, cursor: append ? view.next : null, limit: 50});
    const page = await A.api('GET', url);
    view.rows = append ? view.rows.concat(page.conversations) : page.conversations;
    view.next = page.nextCursor;
    for (const row of page.conversations) view.channels.add(row.channel);
    renderList();
  }

  function payloadText(payload) {
    try {
      return JSON.stringify(payload, null, 2);
    } catch (e) {
      return '';
    }
  }

  function messageItem(m) {
    const text = m.preview || '[' + m.type + ']';
    return el('li', {class: 'msg ' + m.direction + (m.masked ? ' masked' : '')},
      el('div', {class: 'meta'}, A.time(m.createdOn), ' · ', m.type,
        m.masked ? el('span', {class: 'badge masked-badge', title: 'stored masked (data protection)'}, 'masked') : null),
      el('div', {class: 'bubble'}, text),
      m.type !== 'text' ? el('details', {}, el('summary', {}, 'payload'), el('pre', {}, payloadText(m.payload))) : null);
  }

  function renderHistory() {
    const box = controls().history;
    A.clear(box);
    if (!view.open) return;
    const c = view.open;
    box.append(el('div', {class: 'toolbar'},
      el('h3', {}, 'Conversation'),
      el('span', {class: 'mono'}, c.channel + ' · ' + c.userId + (c.threadId ? ' · ' + c.threadId : '')),
      A.button('Close', async () => {
        view.open = null;
        renderHistory();
      })));
    if (view.earlier) box.append(A.button('Show earlier messages', () => loadHistory(true), {class: 'earlier'}));
    box.append(el('ol', {class: 'messages'}, view.messages.map(messageItem)));
  }

  async function loadHistory(earlier) {
    const c = view.open;
    const url = '/api/v1/admin/bots/' + A.path(c.botId, 'messages') +
      A.query({channel: c.channel, user: c.userId, thread: c.threadId, before: earlier ? view.earlier : null});
    const page = await A.api('GET', url);
    view.messages = earlier ? page.messages.concat(view.messages) : page.messages;
    view.earlier = page.earlier;
    renderHistory();
  }

  async function openConversation(c) {
    view.open = c;
    view.messages = [];
    view.earlier = null;
    try {
      await loadHistory(false);
    } catch (error) {
      A.notice(error.message, 'error');
    }
  }

  function build(root) {
    view.root = root;
    const bot = el('select', {class: 'bot', 'aria-label': 'Bot'});
    const channel = el('select', {class: 'channel', 'aria-label': 'Channel'});
    const reload = () => {
      view.open = null;
      renderHistory();
      loadList(false).catch((error) => A.notice(error.message, 'error'));
    };
    bot.addEventListener('change', () => {
      view.channels = new Set();
      channel.value = '';
      reload();
    });
    channel.addEventListener('change', reload);
    root.append(
      el('div', {class: 'toolbar'}, el('h2', {}, 'Conversations'), bot, channel, A.button('Refresh', () => loadList(false))),
      el('div', {class: 'split'},
        el('div', {class: 'list'},
          el('table', {class: 'conversations'},
            el('thead', {}, el('tr', {}, ['Last activity', 'Channel', 'User', 'Thread', 'Last message'].map(
              (h) => el('th', {}, h)))),
            el('tbody')),
          A.button('More', () => loadList(true), {class: 'more', hidden: true})),
        el('div', {class: 'history'})));
  }

  A.views.conversations = {
    build: build,
    async show() {
      const c = controls();
      if (!A.botIds.length) await A.views.bots.refresh();
      A.fillSelect(c.bot, A.botIds, null);
      if (!c.bot.value && A.botIds.length) c.bot.value = A.botIds[0];
      await loadList(false);
    },
    hide() {},
  };
})();
