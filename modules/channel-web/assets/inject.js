/* botpress-py web chat widget, for any page:
 *
 *   <script src="https://bots.example.com/assets/modules/channel-web/inject.js"></script>
 *   <script>window.botpressWebChat.init({ host: 'https://bots.example.com', botId: 'welcome-bot' })</script>
 *
 * The same API as Botpress v12's channel-web: init, configure, mergeConfig, sendEvent,
 * sendPayload, onEvent. The chat itself runs in an iframe served by the bot's server
 * (/s/<botId>?embedded=1), so the page's own scripts and styles never mix with it.
 */
(function () {
  'use strict';

  var DEFAULT_CHAT_ID = 'bp-web-widget';
  var chats = {};  // chatId -> { frame, ready, queue }
  var listeners = [];

  function scriptHost() {
    // The host this script was loaded from: the default for init's ``host``.
    var current = document.currentScript;
    if (current && current.src) return current.src.replace(/\/assets\/modules\/channel-web\/inject\.js.*$/, '');
    return '';
  }

  var HOST = scriptHost();

  function chat(chatId) {
    return chats[chatId || DEFAULT_CHAT_ID];
  }

  function post(chatId, message) {
    var target = chat(chatId);
    if (!target) {
      console.warn('botpressWebChat: no chat "' + (chatId || DEFAULT_CHAT_ID) + '"; call botpressWebChat.init first');
      return;
    }
    if (target.ready) target.frame.contentWindow.postMessage(message, target.origin);
    else target.queue.push(message);
  }

  /**
   * @param {object} config {host, botId, botName?, botConvoDescription?, avatarUrl?, composerPlaceholder?,
   *   enableReset?, hideWidget?, chatId?, className?}
   * @param {string} [targetSelector] where to add the widget (default: body)
   */
  function init(config, targetSelector) {
    config = config || {};
    var chatId = config.chatId || DEFAULT_CHAT_ID;
    var host = String(config.host || HOST || window.location.origin).replace(/\/+$/, '');
    if (!config.botId) throw new Error('botpressWebChat.init: botId is required');
    if (chats[chatId]) return;
    var origin = new URL(host, window.location.href).origin;

    if (!document.querySelector('link[data-bp-webchat]')) {
      var css = document.createElement('link');
      css.rel = 'stylesheet';
      css.href = host + '/assets/modules/channel-web/inject.css';
      css.setAttribute('data-bp-webchat', '');
      document.head.appendChild(css);
    }
    var frame = document.createElement('iframe');
    frame.id = chatId;
    frame.title = config.botName || config.botId;
    frame.className = 'bp-widget-web ' + (config.hideWidget ? 'bp-widget-hidden' : 'bp-widget-widget') +
      (config.className ? ' ' + config.className : '');
    frame.setAttribute('allow', 'clipboard-write');
    frame.src = host + '/s/' + encodeURIComponent(config.botId) + '?embedded=1#options=' +
      encodeURIComponent(JSON.stringify(config));
    var container = document.createElement('div');
    container.id = chatId + '-container';
    container.appendChild(frame);
    (document.querySelector(targetSelector || 'body') || document.body).appendChild(container);
    chats[chatId] = { frame: frame, origin: origin, ready: false, queue: [], className: config.className || '' };
  }

  window.addEventListener('message', function (event) {
    var data = event.data;
    if (!data || typeof data !== 'object' || !data.type) return;
    var target = chat(data.chatId);
    // Only the chat's own iframe may resize it or raise its events.
    if (!target || event.source !== target.frame.contentWindow || event.origin !== target.origin) return;
    if (data.type === 'setClass' && typeof data.value === 'string') {
      target.frame.className = data.value.replace(/[^\w\- ]/g, '') + (target.className ? ' ' + target.className : '');
    } else if (data.type === 'setWidth') {
      target.frame.style.width = typeof data.value === 'number' ? data.value + 'px' : String(data.value);
    } else if (data.type === 'event') {
      if (data.name === 'LIFECYCLE.LOADED' && !target.ready) {
        target.ready = true;
        target.queue.splice(0).forEach(function (m) { target.frame.contentWindow.postMessage(m, target.origin); });
      }
      listeners.forEach(function (listener) {
        if (!listener.types || listener.types.indexOf(data.name) >= 0) {
          try { listener.handler({ type: data.name, payload: data.payload, chatId: data.chatId }); } catch (e) {
            console.error(e);
          }
        }
      });
    }
  });

  window.botpressWebChat = {
    init: init,
    /** Replace options of a running chat (botName, botConvoDescription, avatarUrl, composerPlaceholder). */
    configure: function (payload, chatId) { post(chatId, { action: 'configure', payload: payload }); },
    mergeConfig: function (payload, chatId) { post(chatId, { action: 'mergeConfig', payload: payload }); },
    /** {type: 'show' | 'hide' | 'toggle'} */
    sendEvent: function (payload, chatId) { post(chatId, { action: 'event', payload: payload }); },
    /** Say something as the visitor: {type: 'text', text} or {type: 'postback', payload, title}. */
    sendPayload: function (payload, chatId) { post(chatId, { action: 'sendPayload', payload: payload }); },
    /** handler({type, payload, chatId}) for 'LIFECYCLE.LOADED', 'UI.OPENED', 'UI.CLOSED', 'MESSAGE.SENT',
     * 'MESSAGE.RECEIVED' (all of them when ``types`` is left out). */
    onEvent: function (handler, types) { listeners.push({ handler: handler, types: types || null }); }
  };
})();
