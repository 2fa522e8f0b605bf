/* botpress-py web chat: the markdown subset of message texts, rendered as DOM nodes.
 *
 * Supported: paragraphs (blank line), line breaks, "- " and "1. " lists, `code`, **bold**,
 * *italic* or _italic_, [links](https://...) and bare http(s) links. Everything is built with
 * createElement and text nodes, never innerHTML: text from a bot or a visitor can never become
 * HTML, whatever it contains.
 */
(function () {
  'use strict';

  var LINK_PROTOCOLS = ['http:', 'https:', 'mailto:', 'tel:'];

  /** The URL if it is safe to follow (http, https, mailto, tel, or a path on this server), else null. */
  function safeUrl(raw, protocols) {
    if (typeof raw !== 'string') return null;
    var text = raw.trim();
    if (!text || text.length > 2000) return null;
    if (text.charAt(0) === '/' && text.charAt(1) !== '/' && text.charAt(1) !== '\\') return text;
    var url;
    try {
      url = new URL(text);
    } catch (e) {
      return null;
    }
    return (protocols || LINK_PROTOCOLS).indexOf(url.protocol) >= 0 ? url.href : null;
  }

  function link(href, label) {
    var a = document.createElement('a');
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    a.textContent = label;
    return a;
  }

  // One inline token at a time, the earliest match first; ties go to the order listed.
  var INLINE = [
    { name: 'code', re: /`([^`\n]+)`/ },
    { name: 'link', re: /\[([^\]\n]{1,500})\]\(([^)\s]{1,2000})\)/ },
    { name: 'bold', re: /\*\*([^*\n]+?)\*\*/ },
    { name: 'italic', re: /(?:^|[^\w*])\*([^*\n]+?)\*(?![\w*])|(?:^|[^\w])_([^_\n]+?)_(?!\w)/ },
    { name: 'url', re: /https?:\/\/[^\s<>"')\]]+[^\s<>"')\].,;:!?]/ }
  ];

  function appendInline(parent, text, depth) {
    while (text) {
      var best = null;
      for (var i = 0; i < INLINE.length; i++) {
        var m = INLINE[i].re.exec(text);
        if (m && (best === null || m.index < best.m.index)) best = { kind: INLINE[i].name, m: m };
      }
      if (best === null || depth > 4) {
        parent.appendChild(document.createTextNode(text));
        return;
      }
      var m2 = best.m;
      var start = m2.index;
      var whole = m2[0];
      if (best.kind === 'italic') {
        // The pattern may include the character before the marker: it stays plain text.
        var lead = whole.indexOf(m2[1] !== undefined ? '*' : '_');
        start += lead;
        whole = whole.slice(lead);
      }
      if (start > 0) parent.appendChild(document.createTextNode(text.slice(0, start)));
      if (best.kind === 'code') {
        var code = document.createElement('code');
        code.textContent = m2[1];
        parent.appendChild(code);
      } else if (best.kind === 'link') {
        var href = safeUrl(m2[2]);
        if (href) parent.appendChild(link(href, m2[1]));
        else parent.appendChild(document.createTextNode(m2[1]));
      } else if (best.kind === 'bold') {
        var strong = document.createElement('strong');
        appendInline(strong, m2[1], depth + 1);
        parent.appendChild(strong);
      } else if (best.kind === 'italic') {
        var em = document.createElement('em');
        appendInline(em, m2[1] !== undefined ? m2[1] : m2[2], depth + 1);
        parent.appendChild(em);
      } else {
        var url = safeUrl(whole, ['http:', 'https:']);
        parent.appendChild(url ? link(url, whole) : document.createTextNode(whole));
      }
      text = text.slice(start + whole.length);
    }
  }

  function appendLines(parent, lines) {
    lines.forEach(function (line, index) {
      if (index > 0) parent.appendChild(document.createElement('br'));
      appendInline(parent, line, 0);
    });
  }

  /** Render ``text`` into ``container`` (appended). */
  function render(text, container) {
    var blocks = String(text).replace(/\r\n?/g, '\n').split(/\n{2,}/);
    blocks.forEach(function (block) {
      var lines = block.split('\n');
      var bullet = lines.every(function (l) { return /^\s*[-*] \S/.test(l); });
      var numbered = lines.every(function (l) { return /^\s*\d{1,3}[.)] \S/.test(l); });
      if (bullet || numbered) {
        var list = document.createElement(bullet ? 'ul' : 'ol');
        lines.forEach(function (l) {
          var item = document.createElement('li');
          appendInline(item, l.replace(/^\s*(?:[-*]|\d{1,3}[.)]) /, ''), 0);
          list.appendChild(item);
        });
        container.appendChild(list);
      } else {
        var p = document.createElement('p');
        appendLines(p, lines);
        container.appendChild(p);
      }
    });
    return container;
  }

  window.BPMarkdown = { render: render, safeUrl: safeUrl };
})();
