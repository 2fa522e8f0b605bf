/* botpress-py web chat: the chat page (/s/<botId>), alone or inside the widget's iframe.
 *
 * Identity: a visitor id and token from POST /visitors, kept in localStorage per bot.
 * Sending: POST /messages, retried with the same clientMessageId until stored.
 * Receiving: a WebSocket pushes replies and typing; after any blip it reconnects and the
 * server replays what came since the last message seen (``cursor``). When the bot goes away
 * (disabled, channel off) the page says so and keeps checking until it is back.
 */
(function () {
  'use strict';

  var R = window.BPRender;
  var el = R.el;
  var root = document.getElementById('bp-webchat');
  if (!root) return;
  var BOT = root.getAttribute('data-bot-id');
  var API = root.getAttribute('data-api');
  var ASSETS = root.getAttribute('data-assets');
  var embedded = new URLSearchParams(location.search).get('embedded') === '1';
  var options = readOptions();
  var storeKey = 'bp-webchat:' + BOT;

  var state = {
    info: null, identity: null, cursor: 0, first: null, seen: {}, pending: {}, socket: null,
    attempt: 0, timer: null, open: !embedded, unavailable: false, typingTimer: null, lastChoices: null
  };

  function readOptions() {
    var match = /(?:^#|&)options=([^&]*)/.exec(location.hash);
    if (!match) return {};
    try {
      var parsed = JSON.parse(decodeURIComponent(match[1]));
      return parsed && typeof parsed === 'object' ? (parsed.config || parsed) : {};
    } catch (e) {
      return {};
    }
  }

  // -- the page's parts ------------------------------------------------------------------------
  var ui = {};
  function build() {
    root.textContent = '';
    root.className = 'bpw-root' + (embedded ? ' bpw-embedded' : '');
    ui.launcher = R.button('', 'bpw-launcher', function () { setOpen(true); });
    ui.launcher.setAttribute('aria-label', 'Open the chat');
    ui.launcher.appendChild(el('span', 'bpw-launcher-icon'));
    ui.layout = el('div', 'bpw-layout');
    ui.header = el('header', 'bpw-header');
    ui.avatar = el('img', 'bpw-avatar');
    ui.avatar.alt = '';
    ui.title = el('div', 'bpw-title');
    ui.name = el('div', 'bpw-name', options.botName || root.getAttribute('data-bot-name') || BOT);
    ui.subtitle = el('div', 'bpw-subtitle', options.botConvoDescription || '');
    ui.title.appendChild(ui.name);
    ui.title.appendChild(ui.subtitle);
    ui.infoButton = headerButton('i', 'Bot info', function () { toggleInfo(); });
    ui.resetButton = headerButton('\u21BB', 'Start a new conversation', function () { reset(); });
    ui.closeButton = headerButton('\u2715', 'Close the chat', function () { setOpen(false); });
    [ui.avatar, ui.title, ui.infoButton, ui.resetButton, ui.closeButton].forEach(function (n) {
      ui.header.appendChild(n);
    });
    ui.banner = el('div', 'bpw-banner');
    ui.banner.setAttribute('role', 'status');
    ui.info = el('section', 'bpw-botinfo');
    ui.messages = el('div', 'bpw-messages');
    ui.messages.setAttribute('role', 'log');
    ui.messages.setAttribute('aria-live', 'polite');
    ui.earlier = R.button('Show earlier messages', 'bpw-earlier', function () { loadEarlier(); });
    ui.list = el('div', 'bpw-list');
    ui.typing = el('div', 'bpw-row bpw-bot bpw-typing');
    ui.typing.appendChild(el('div', 'bpw-bubble', '\u2022\u2022\u2022'));
    [ui.earlier, ui.list, ui.typing].forEach(function (n) { ui.messages.appendChild(n); });
    ui.composer = el('form', 'bpw-composer');
    ui.input = el('textarea', 'bpw-input');
    ui.input.rows = 1;
    ui.input.placeholder = options.composerPlaceholder || 'Reply to ' + ui.name.textContent;
    ui.input.setAttribute('aria-label', 'Your message');
    ui.send = el('button', 'bpw-send', 'Send');
    ui.send.type = 'submit';
    ui.composer.appendChild(ui.input);
    ui.composer.appendChild(ui.send);
    ui.composer.addEventListener('submit', function (e) {
      e.preventDefault();
      var text = ui.input.value;
      if (!text.trim()) return;
      ui.input.value = '';
      say(text);
    });
    ui.input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        ui.composer.requestSubmit();
      }
    });
    [ui.header, ui.banner, ui.info, ui.messages, ui.composer].forEach(function (n) { ui.layout.appendChild(n); });
    root.appendChild(ui.layout);
    root.appendChild(ui.launcher);
    ui.closeButton.hidden = !embedded;
    ui.resetButton.hidden = options.enableReset === false;
    ui.infoButton.hidden = true;
    ui.info.hidden = true;
    ui.earlier.hidden = true;
    ui.typing.hidden = true;
    showAvatar(options.avatarUrl || '');
    setBanner('');
    setOpen(state.open);
  }

  function headerButton(label, title, onClick) {
    var b = R.button(label, 'bpw-header-button', onClick);
    b.title = title;
    b.setAttribute('aria-label', title);
    return b;
  }

  function showAvatar(url) {
    ui.avatar.src = window.BPMarkdown.safeUrl(url, ['http:', 'https:']) || ASSETS + '/bot.svg';
  }

  function setBanner(text, kind) {
    ui.banner.textContent = text;
    ui.banner.hidden = !text;
    ui.banner.className = 'bpw-banner' + (kind ? ' bpw-banner-' + kind : '');
    var blocked = kind === 'unavailable';
    ui.input.disabled = blocked;
    ui.send.disabled = blocked;
    root.classList.toggle('bpw-unavailable', blocked);
  }

  function setOpen(open) {
    state.open = open;
    root.classList.toggle('bpw-open', open);
    ui.layout.hidden = !open;
    ui.launcher.hidden = !embedded || open || options.hideWidget === true;
    if (embedded) {
      var size = open ? 'bp-widget-convo' : options.hideWidget ? 'bp-widget-hidden' : 'bp-widget-widget';
      toParent({ type: 'setClass', value: 'bp-widget-web ' + size });
      toParent({ type: 'event', name: open ? 'UI.OPENED' : 'UI.CLOSED' });
    }
    if (open) setTimeout(function () { ui.input.focus(); }, 0);
  }

  function toParent(message) {
    if (!embedded || window.parent === window) return;
    message.chatId = options.chatId || 'bp-web-widget';
    window.parent.postMessage(message, '*');
  }

  // -- info page ---------------------------------------------------------------------------
  function renderInfo() {
    var info = state.info;
    ui.info.textContent = '';
    var details = info.details || {};
    var cover = R.image(details.coverPictureUrl, '');
    if (cover) { cover.className = 'bpw-botinfo-cover'; ui.info.appendChild(cover); }
    var avatar = el('img', 'bpw-botinfo-avatar');
    avatar.src = ui.avatar.src;
    avatar.alt = '';
    ui.info.appendChild(avatar);
    ui.info.appendChild(el('h2', 'bpw-botinfo-name', ui.name.textContent));
    var text = el('div', 'bpw-botinfo-description');
    window.BPMarkdown.render(info.description || '', text);
    ui.info.appendChild(text);
    var links = el('div', 'bpw-botinfo-links');
    [['website', 'Website', ''], ['phoneNumber', 'Phone', 'tel:'], ['emailAddress', 'Email', 'mailto:'],
      ['termsConditions', 'Terms and conditions', ''], ['privacyPolicy', 'Privacy policy', '']]
      .forEach(function (row) {
        if (details[row[0]]) links.appendChild(R.openLink(row[2] + details[row[0]], row[1], 'bpw-botinfo-link'));
      });
    if (links.childNodes.length) ui.info.appendChild(links);
    ui.info.appendChild(R.button('Start chatting', 'bpw-botinfo-start', function () { toggleInfo(false); }));
  }

  function toggleInfo(show) {
    var visible = show === undefined ? ui.info.hidden : show;
    ui.info.hidden = !visible;
    ui.messages.hidden = visible;
    ui.composer.hidden = visible;
    if (!visible) ui.input.focus();
  }

  // -- messages --------------------------------------------------------------------------------
  function act() {
    return {
      say: function (text) { say(text); },
      postback: function (payload, title) { send({ type: 'postback', payload: payload, title: title }, title); },
      choose: function (title, value) { send({ type: 'quick_reply', text: title, payload: value }, title); }
    };
  }

  function messageRow(message) {
    var mine = message.direction === 'incoming';
    var row = el('div', 'bpw-row ' + (mine ? 'bpw-user' : 'bpw-bot') + ' bpw-type-' + message.type);
    row.appendChild(R.payload(message.payload, act()));
    if (message.createdOn) row.title = new Date(message.createdOn).toLocaleString();
    return row;
  }

  function known(message) {
    return state.seen[message.id] || (message.clientMessageId && state.pending[message.clientMessageId]);
  }

  /** Show a message unless it is already shown (by id, or as the local copy of a sent one). */
  function addMessage(message, atTop) {
    if (message.seq && message.seq > state.cursor && !atTop) state.cursor = message.seq;
    if (!message.id || message.conversationId !== conversation()) return;
    var local = message.clientMessageId && state.pending[message.clientMessageId];
    if (local) {
      state.seen[message.id] = true;
      local.classList.remove('bpw-sending');
      return;
    }
    if (known(message)) return;
    state.seen[message.id] = true;
    var row = messageRow(message);
    if (atTop) {
      ui.list.insertBefore(row, ui.list.firstChild);
    } else {
      if (message.direction === 'outgoing') hideTyping();
      retireChoices();
      ui.list.appendChild(row);
      if (message.type === 'single-choice') state.lastChoices = row;
      scrollDown();
      if (message.direction === 'outgoing') toParent({ type: 'event', name: 'MESSAGE.RECEIVED', payload: message });
    }
  }

  function retireChoices() {
    if (state.lastChoices) state.lastChoices.classList.add('bpw-answered');
    state.lastChoices = null;
  }

  function scrollDown() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function showTyping(ms) {
    ui.typing.hidden = false;
    scrollDown();
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(hideTyping, Math.min(ms || 1000, 5000) + 500);
  }

  function hideTyping() {
    ui.typing.hidden = true;
    clearTimeout(state.typingTimer);
  }

  // -- the rest lives in webchat-net.js: identity, sending, history, socket --------------------
  function conversation() {
    return state.identity ? state.identity.conversationId : '';
  }

  window.BPWebChat = {
    root: root, bot: BOT, api: API, embedded: embedded, options: options, storeKey: storeKey, state: state, ui: ui,
    build: build, setBanner: setBanner, setOpen: setOpen, toParent: toParent, renderInfo: renderInfo,
    toggleInfo: toggleInfo, addMessage: addMessage, messageRow: messageRow, showTyping: showTyping,
    hideTyping: hideTyping, retireChoices: retireChoices, scrollDown: scrollDown, showAvatar: showAvatar,
    conversation: conversation
  };

  // Defined by webchat-net.js (loaded after this file).
  function say(text) { window.BPWebChat.send({ type: 'text', text: text }, text); }
  function send(payload, shown) { window.BPWebChat.send(payload, shown); }
  function reset() { window.BPWebChat.reset(); }
  function loadEarlier() { window.BPWebChat.loadEarlier(); }
})();
