/* botpress-py web chat: one DOM element per message payload (the standard payloads of botpress-py).
 *
 * text, single-choice (quick-reply buttons), card, carousel, image, file, video, audio,
 * handover. Every text goes through BPMarkdown or textContent; every URL through safeUrl.
 * ``act`` carries what buttons do: act.say(text), act.postback(payload, title),
 * act.choose(title, value).
 */
(function () {
  'use strict';

  var md = window.BPMarkdown;
  var MEDIA = ['http:', 'https:'];

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function str(value) {
    return typeof value === 'string' ? value : value === undefined || value === null ? '' : String(value);
  }

  function bubble(className) {
    return el('div', 'bpw-bubble' + (className ? ' ' + className : ''));
  }

  function textBubble(text) {
    var b = bubble('bpw-text');
    md.render(str(text), b);
    return b;
  }

  function button(label, className, onClick) {
    var b = el('button', className, label);
    b.type = 'button';
    b.addEventListener('click', function () {
      onClick(b);
    });
    return b;
  }

  function image(src, alt) {
    var url = md.safeUrl(src, MEDIA);
    if (!url) return null;
    var img = el('img', 'bpw-image');
    img.src = url;
    img.alt = str(alt);
    img.loading = 'lazy';
    img.referrerPolicy = 'no-referrer';
    return img;
  }

  function openLink(href, label, className) {
    var url = md.safeUrl(href);
    var a = el(url ? 'a' : 'span', className, label);
    if (url) {
      a.href = url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer nofollow';
    }
    return a;
  }

  function card(payload, act) {
    var box = el('div', 'bpw-card');
    var picture = image(payload.image, payload.title);
    if (picture) box.appendChild(picture);
    var body = el('div', 'bpw-card-body');
    body.appendChild(el('div', 'bpw-card-title', str(payload.title)));
    if (payload.subtitle) body.appendChild(el('div', 'bpw-card-subtitle', str(payload.subtitle)));
    box.appendChild(body);
    var actions = Array.isArray(payload.actions) ? payload.actions : [];
    if (actions.length) {
      var row = el('div', 'bpw-card-actions');
      actions.forEach(function (action) {
        if (!action || typeof action !== 'object') return;
        var title = str(action.title) || str(action.text) || str(action.payload);
        if (action.action === 'Open URL') {
          row.appendChild(openLink(action.url, title, 'bpw-card-button bpw-card-link'));
        } else if (action.action === 'Postback') {
          row.appendChild(button(title, 'bpw-card-button', function () {
            act.postback(str(action.payload), title);
          }));
        } else if (action.action === 'Say something') {
          row.appendChild(button(title, 'bpw-card-button', function () {
            act.say(str(action.text) || title);
          }));
        }
      });
      box.appendChild(row);
    }
    return box;
  }

  function choices(payload, act) {
    var wrap = el('div', 'bpw-message-body');
    wrap.appendChild(textBubble(payload.text));
    var list = Array.isArray(payload.choices) ? payload.choices : [];
    var row = el('div', 'bpw-choices');
    row.setAttribute('role', 'group');
    list.forEach(function (choice) {
      if (!choice || typeof choice !== 'object') return;
      var title = str(choice.title) || str(choice.value);
      row.appendChild(button(title, 'bpw-choice', function () {
        if (row.classList.contains('bpw-used')) return;
        row.classList.add('bpw-used');
        act.choose(title, str(choice.value) || title);
      }));
    });
    if (row.childNodes.length) wrap.appendChild(row);
    return wrap;
  }

  function media(payload, kind) {
    var url = md.safeUrl(payload.url, MEDIA);
    var box = bubble('bpw-media');
    if (!url) {
      box.appendChild(el('span', 'bpw-muted', '[' + kind + ' unavailable]'));
      return box;
    }
    if (kind === 'video' || kind === 'audio') {
      var player = el(kind, 'bpw-player');
      player.controls = true;
      player.preload = 'metadata';
      player.src = url;
      box.appendChild(player);
    }
    var name = str(payload.title) || decodeURIComponent(url.split('/').pop().split('?')[0] || 'file');
    var a = openLink(url, (kind === 'file' ? '\u{1F4CE} ' : '') + name, 'bpw-file');
    a.setAttribute('download', '');
    box.appendChild(a);
    return box;
  }

  /** The element showing one message payload. */
  function payloadElement(payload, act) {
    var kind = payload && payload.type;
    if (kind === 'text') return textBubble(payload.text);
    if (kind === 'single-choice') return choices(payload, act);
    if (kind === 'card') return card(payload, act);
    if (kind === 'carousel') {
      var strip = el('div', 'bpw-carousel');
      (Array.isArray(payload.items) ? payload.items : []).forEach(function (item) {
        if (item && typeof item === 'object') strip.appendChild(card(item, act));
      });
      return strip;
    }
    if (kind === 'image') {
      var b = bubble('bpw-media');
      var picture = image(payload.image, payload.title);
      if (picture) {
        var link = openLink(payload.image, '', 'bpw-image-link');
        link.appendChild(picture);
        b.appendChild(link);
      }
      if (payload.title) b.appendChild(el('div', 'bpw-caption', str(payload.title)));
      return b;
    }
    if (kind === 'file' || kind === 'video' || kind === 'audio') return media(payload, kind);
    if (kind === 'handover') return el('div', 'bpw-note', 'A person will take over this conversation.');
    if (kind === 'quick_reply') return textBubble(payload.text);
    if (kind === 'postback') return textBubble(payload.title || payload.payload);
    return el('div', 'bpw-note', '[a message this chat cannot show]');
  }

  window.BPRender = { payload: payloadElement, el: el, button: button, image: image, openLink: openLink };
})();
