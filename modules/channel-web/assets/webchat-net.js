/* botpress-py web chat: talking to the server (identity, sending, history, WebSocket, widget messages).
 * Loaded after webchat.js, whose window.BPWebChat it completes and starts.
 */
(function () {
  'use strict';

  var W = window.BPWebChat;
  if (!W) return;
  var state = W.state;
  var ui = W.ui;
  var MAX_BACKOFF = 5000;

  // -- HTTP ----------------------------------------------------------------------------------
  function request(method, path, body) {
    var headers = { 'Content-Type': 'application/json' };
    if (state.identity) headers.Authorization = 'Bearer ' + state.identity.token;
    return fetch(W.api + path, {
      method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit'
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.error || 'HTTP ' + response.status);
          error.status = response.status;
          error.body = data;
          throw error;
        }
        return data;
      });
    });
  }

  function randomId() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function delay(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // -- identity --------------------------------------------------------------------------------
  function loadIdentity() {
    try {
      var saved = JSON.parse(localStorage.getItem(W.storeKey) || 'null');
      if (saved && saved.token && saved.conversationId) return saved;
    } catch (e) { /* private mode or a broken value: start afresh */ }
    return null;
  }

  function saveIdentity() {
    try {
      localStorage.setItem(W.storeKey, JSON.stringify(state.identity));
    } catch (e) { /* the chat works, it just will not survive a reload */ }
  }

  function newIdentity() {
    state.identity = null;
    return request('POST', '/visitors').then(function (visitor) {
      state.identity = { userId: visitor.userId, token: visitor.token, conversationId: '' };
      return request('POST', '/conversations');
    }).then(function (created) {
      state.identity.conversationId = created.conversationId;
      saveIdentity();
    });
  }

  /** Run ``call``; on 401 (the server no longer knows the token) get a new identity and retry once. */
  function authed(call) {
    return call().catch(function (error) {
      if (error.status !== 401) throw error;
      return newIdentity().then(function () {
        clearMessages();
        return call();
      });
    });
  }

  // -- sending -----------------------------------------------------------------------------------
  function send(payload, shown) {
    if (!state.identity) return;
    var clientId = randomId();
    var row = W.messageRow({ direction: 'incoming', type: payload.type, payload: { type: 'text', text: shown } });
    row.classList.add('bpw-sending');
    state.pending[clientId] = row;
    W.retireChoices();
    ui.list.appendChild(row);
    W.scrollDown();
    W.toParent({ type: 'event', name: 'MESSAGE.SENT', payload: payload });
    var conversationId = state.identity.conversationId;
    var attempt = 0;
    function tryOnce() {
      return authed(function () {
        return request('POST', '/messages', { conversationId: conversationId, payload: payload,
          clientMessageId: clientId });
      }).then(function (stored) {
        state.seen[stored.id] = true;
        row.classList.remove('bpw-sending');
      }).catch(function (error) {
        // 4xx but 429: the message itself is refused, say so. Otherwise retry: it is kept until stored.
        if (error.status && error.status < 500 && error.status !== 429) {
          row.classList.remove('bpw-sending');
          row.classList.add('bpw-failed');
          row.appendChild(W.messageRow({ direction: 'outgoing', type: 'note',
            payload: { type: 'text', text: 'Not sent: ' + error.message } }).firstChild);
          return;
        }
        attempt += 1;
        var wait = (error.body && error.body.retryAfter ? error.body.retryAfter * 1000 : 0) ||
          Math.min(MAX_BACKOFF, 500 * Math.pow(2, attempt));
        return delay(wait).then(tryOnce);
      });
    }
    tryOnce();
  }

  // -- history -----------------------------------------------------------------------------------
  function clearMessages() {
    ui.list.textContent = '';
    state.seen = {};
    state.pending = {};
    state.cursor = 0;
    state.first = null;
    state.lastChoices = null;
    ui.earlier.hidden = true;
    W.hideTyping();
  }

  function historyPath(query) {
    return '/conversations/' + encodeURIComponent(state.identity.conversationId) + '/messages' + query;
  }

  function loadHistory() {
    return authed(function () { return request('GET', historyPath('')); }).then(function (page) {
      page.messages.forEach(function (m) { W.addMessage(m); });
      state.cursor = Math.max(state.cursor, page.cursor || 0);
      state.first = page.first;
      ui.earlier.hidden = !page.more;
      return page;
    });
  }

  function loadEarlier() {
    if (!state.first) return;
    request('GET', historyPath('?before=' + state.first)).then(function (page) {
      var height = ui.messages.scrollHeight;
      page.messages.slice().reverse().forEach(function (m) { W.addMessage(m, true); });
      if (page.first) state.first = page.first;
      ui.earlier.hidden = !page.more;
      ui.messages.scrollTop = ui.messages.scrollHeight - height;
    });
  }

  /** More than a socket catch-up holds: page forward over REST until nothing is left. */
  function catchUp() {
    return request('GET', historyPath('?limit=200&after=' + state.cursor)).then(function (page) {
      page.messages.forEach(function (m) { W.addMessage(m); });
      if (page.cursor) state.cursor = Math.max(state.cursor, page.cursor);
      if (page.more) return catchUp();
    });
  }

  function reset() {
    authed(function () { return request('POST', '/conversations'); }).then(function (created) {
      state.identity.conversationId = created.conversationId;
      saveIdentity();
      clearMessages();
      connect();
    });
  }

  // -- the socket --------------------------------------------------------------------------------
  function connect() {
    clearTimeout(state.timer);
    if (state.socket) {
      state.socket.onclose = null;
      state.socket.close();
    }
    var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    var ws = new WebSocket(scheme + '//' + location.host + W.api + '/socket');
    state.socket = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: 'auth', token: state.identity.token,
        conversationId: state.identity.conversationId, after: state.cursor }));
    };
    ws.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.type === 'ready') {
        state.attempt = 0;
        W.setBanner('');
        W.root.classList.add('bpw-connected');
        data.messages.forEach(function (m) { W.addMessage(m); });
        if (data.cursor) state.cursor = Math.max(state.cursor, data.cursor);
        if (data.more) catchUp();
      } else if (data.type === 'message') {
        W.addMessage(data.message);
      } else if (data.type === 'typing' && data.conversationId === W.conversation()) {
        W.showTyping(data.value);
      }
    };
    ws.onclose = function (event) {
      if (state.socket !== ws) return;
      state.socket = null;
      W.root.classList.remove('bpw-connected');
      if (event.code === 4401) {
        newIdentity().then(function () { clearMessages(); connect(); }, scheduleReconnect);
        return;
      }
      scheduleReconnect();
    };
  }

  /** After a close: wait a little, check that the bot is there, then connect again. */
  function scheduleReconnect() {
    state.attempt += 1;
    if (!state.unavailable) W.setBanner('Reconnecting\u2026', 'reconnecting');
    var wait = Math.min(MAX_BACKOFF, 250 * Math.pow(2, state.attempt));
    clearTimeout(state.timer);
    state.timer = setTimeout(function () {
      request('GET', '/botInfo').then(function (info) {
        applyInfo(info);
        if (!state.identity) return start();
        connect();
      }, function (error) {
        unavailable(error);
        scheduleReconnect();
      });
    }, wait);
  }

  function unavailable(error) {
    state.unavailable = Boolean(error.status);  // no status: the network, not the bot
    W.setBanner(state.unavailable ? W.ui.name.textContent + ' is unavailable right now. This chat reconnects by ' +
      'itself when it is back.' : 'Reconnecting\u2026', state.unavailable ? 'unavailable' : 'reconnecting');
  }

  function applyInfo(info) {
    state.info = info;
    state.unavailable = false;
    W.setBanner('');
    if (!W.options.botName) {
      ui.name.textContent = info.name;
      document.title = info.name;
    }
    if (!W.options.composerPlaceholder) ui.input.placeholder = 'Reply to ' + ui.name.textContent;
    if (!W.options.avatarUrl) W.showAvatar(info.avatarUrl);
    ui.input.maxLength = info.maxMessageLength;
    ui.infoButton.hidden = !info.showBotInfoPage;
    if (info.showBotInfoPage) W.renderInfo();
  }

  // -- start -------------------------------------------------------------------------------------
  function start() {
    return request('GET', '/botInfo').then(function (info) {
      applyInfo(info);
      state.identity = loadIdentity();
      return state.identity ? null : newIdentity();
    }).then(loadHistory).then(function (page) {
      if (state.info.showBotInfoPage && !page.messages.length) W.toggleInfo(true);
      W.root.classList.add('bpw-ready');
      W.toParent({ type: 'event', name: 'LIFECYCLE.LOADED' });
      connect();
    }).catch(function (error) {
      unavailable(error);
      scheduleReconnect();
    });
  }

  // The embedding page talks to the chat through inject.js: only its messages are taken.
  window.addEventListener('message', function (event) {
    if (!W.embedded || event.source !== window.parent || !event.data || typeof event.data !== 'object') return;
    var action = event.data.action;
    var payload = event.data.payload || {};
    if (action === 'event') {
      if (payload.type === 'show') W.setOpen(true);
      else if (payload.type === 'hide') W.setOpen(false);
      else if (payload.type === 'toggle') W.setOpen(!state.open);
    } else if (action === 'sendPayload') {
      if (payload.type === 'text' && typeof payload.text === 'string') send(payload, payload.text);
      else if (payload.type === 'postback' || payload.type === 'quick_reply') send(payload, payload.title || payload.text || '');
    } else if (action === 'configure' || action === 'mergeConfig') {
      Object.keys(payload).forEach(function (key) { W.options[key] = payload[key]; });
      if (payload.botName) ui.name.textContent = payload.botName;
      if (payload.botConvoDescription !== undefined) ui.subtitle.textContent = payload.botConvoDescription;
      if (payload.composerPlaceholder) ui.input.placeholder = payload.composerPlaceholder;
      if (payload.avatarUrl) W.showAvatar(payload.avatarUrl);
    }
  });

  W.send = send;
  W.reset = reset;
  W.loadEarlier = loadEarlier;
  W.connect = connect;
  W.build();
  start();
})();
