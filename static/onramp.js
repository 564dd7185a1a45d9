/*!
 * Onramp in-app widget: polls the in-app message API and shows the newest unseen message as a
 * banner (or a modal when its subject starts with "[modal]"), with a call to action and a close
 * button, and reports seen / clicked / dismissed. Dependency-free ES2017, no build step.
 *
 *   <script src="https://onramp.example.com/static/onramp.js"></script>
 *   <script>
 *     Onramp.init({host: "https://onramp.example.com", writeKey: "…", userId: "u1",
 *                  userHash: "<hex HMAC-SHA256 from your backend>", pollSeconds: 30});
 *   </script>
 *
 * Or without inline script: <script src="…/onramp.js" data-config="ID"> where ID is the id of a
 * <script type="application/json"> element holding the same options.
 *
 * On a page that also runs Segment's analytics.js, leave out userId and anonymousId: the widget
 * then reads analytics.js's own ids (ajs_user_id, else ajs_anonymous_id, from localStorage or
 * cookies) before every poll, so both agree on the person, also after analytics.identify().
 *
 * Message text is only ever set with textContent (never innerHTML), so it cannot inject markup.
 */
(function (global) {
  "use strict";

  var PREFIX = "onramp-w";
  var STYLE_ID = PREFIX + "-styles";
  var MIN_POLL_SECONDS = 5;
  var CSS = [
    "." + PREFIX + "-banner{position:fixed;left:16px;right:16px;bottom:16px;z-index:2147483000;",
    "max-width:640px;margin:0 auto;display:flex;gap:12px;align-items:flex-start;padding:14px 16px;",
    "background:#111827;color:#f9fafb;border-radius:10px;box-shadow:0 10px 30px rgba(0,0,0,.25);",
    "font:15px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif}",
    "." + PREFIX + "-backdrop{position:fixed;inset:0;z-index:2147483000;background:rgba(17,24,39,.55);",
    "display:flex;align-items:center;justify-content:center;padding:16px}",
    "." + PREFIX + "-modal{position:relative;max-width:480px;width:100%;padding:24px;background:#fff;",
    "color:#111827;border-radius:12px;box-shadow:0 20px 50px rgba(0,0,0,.3);",
    "font:15px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif}",
    "." + PREFIX + "-content{flex:1;min-width:0}",
    "." + PREFIX + "-title{display:block;font-weight:600;margin:0 0 4px}",
    "." + PREFIX + "-modal ." + PREFIX + "-title{font-size:18px;margin-bottom:8px}",
    "." + PREFIX + "-body{margin:0;white-space:pre-line;overflow-wrap:anywhere}",
    "." + PREFIX + "-cta{display:inline-block;margin-top:10px;padding:6px 14px;border-radius:6px;",
    "background:#4f46e5;color:#fff;text-decoration:none;font-weight:600}",
    "." + PREFIX + "-cta:focus-visible,." + PREFIX + "-close:focus-visible{outline:3px solid #a5b4fc;",
    "outline-offset:2px}",
    "." + PREFIX + "-close{flex:none;border:0;background:transparent;color:inherit;cursor:pointer;",
    "font-size:22px;line-height:1;padding:2px 6px;border-radius:4px}",
    "." + PREFIX + "-modal ." + PREFIX + "-close{position:absolute;top:10px;right:10px}"
  ].join("");

  function injectStyles(doc) {
    if (doc.getElementById(STYLE_ID)) return;
    var style = doc.createElement("style");
    style.id = STYLE_ID;
    style.textContent = CSS;
    (doc.head || doc.documentElement).appendChild(style);
  }

  function el(doc, tag, className, text) {
    var node = doc.createElement(tag);
    if (className) node.className = PREFIX + "-" + className;
    if (text) node.textContent = text;
    return node;
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  // analytics.js keeps its ids in localStorage as JSON and in cookies (a plain or JSON string).
  function analyticsJsId(key) {
    var raw = null;
    try {
      raw = global.localStorage.getItem(key);
    } catch (error) {
      raw = null;
    }
    if (raw === null && global.document) {
      var match = ("; " + global.document.cookie).split("; " + key + "=")[1];
      if (match !== undefined) {
        try {
          raw = decodeURIComponent(match.split(";")[0]);
        } catch (error) {
          raw = null;
        }
      }
    }
    if (raw === null || raw === "") return null;
    try {
      var value = JSON.parse(raw);
      return typeof value === "string" || typeof value === "number" ? String(value) : null;
    } catch (error) {
      return raw;
    }
  }

  function analyticsJsIds() {
    return { userId: analyticsJsId("ajs_user_id"), anonymousId: analyticsJsId("ajs_anonymous_id") };
  }

  function Widget(options) {
    if (!options || !options.writeKey) {
      throw new Error("Onramp.init needs writeKey and userId (or anonymousId)");
    }
    var ids = analyticsJsIds();
    if (!(options.userId || options.anonymousId || ids.userId || ids.anonymousId)) {
      throw new Error("Onramp.init needs userId or anonymousId (or analytics.js on the page)");
    }
    this.host = String(options.host || "").replace(/\/+$/, "");
    this.writeKey = String(options.writeKey);
    this.userId = options.userId ? String(options.userId) : null;
    this.anonymousId = options.anonymousId ? String(options.anonymousId) : null;
    this.followsAnalyticsJs = !(this.userId || this.anonymousId);
    this.userHash = options.userHash ? String(options.userHash) : null;
    this.pollSeconds = Math.max(MIN_POLL_SECONDS, Number(options.pollSeconds) || 30);
    this.doc = options.document || global.document;
    this.container = options.container || this.doc.body;
    this.shown = null; // {message, root}
    this.handled = {}; // ids shown or dismissed in this page, never shown twice
    this.timer = null;
    this.stopped = false;
    this.failures = 0;
  }

  Widget.prototype.ids = function () {
    return this.followsAnalyticsJs
      ? analyticsJsIds()
      : { userId: this.userId, anonymousId: this.anonymousId };
  };

  Widget.prototype.query = function () {
    var ids = this.ids();
    if (ids.userId) return "userId=" + encodeURIComponent(ids.userId);
    if (ids.anonymousId) return "anonymousId=" + encodeURIComponent(ids.anonymousId);
    return null; // analytics.js was reset and has no id yet
  };

  Widget.prototype.headers = function () {
    var headers = { Authorization: "Basic " + global.btoa(this.writeKey + ":") };
    if (this.userHash) headers["X-Onramp-User-Hash"] = this.userHash;
    return headers;
  };

  Widget.prototype.fetchMessages = async function () {
    if (!this.query()) return [];
    var response = await global.fetch(this.host + "/v1/in-app/messages?" + this.query(), {
      method: "GET",
      headers: this.headers(),
      credentials: "omit",
      cache: "no-store"
    });
    if (response.status === 401 || response.status === 403) {
      this.stop();
      throw new Error("Onramp: the write key or user hash was refused (" + response.status + ")");
    }
    if (!response.ok) throw new Error("Onramp: HTTP " + response.status);
    var document = await response.json();
    return Array.isArray(document.messages) ? document.messages : [];
  };

  Widget.prototype.report = function (id, outcome) {
    var url = this.host + "/v1/in-app/messages/" + encodeURIComponent(id) + "/" + outcome + "?" + this.query();
    return global
      .fetch(url, { method: "POST", headers: this.headers(), credentials: "omit", keepalive: true })
      .catch(function (error) {
        if (global.console) global.console.warn("Onramp: could not report " + outcome, error);
      });
  };

  Widget.prototype.poll = async function () {
    if (this.stopped) return;
    try {
      if (!this.shown && !(this.doc.hidden)) {
        var messages = await this.fetchMessages();
        var self = this;
        var next = messages.filter(function (m) {
          return !m.seenAt && !self.handled[m.id];
        })[0];
        if (next) this.show(next);
      }
      this.failures = 0;
    } catch (error) {
      this.failures += 1;
      if (global.console) global.console.warn(error && error.message ? error.message : error);
    }
    this.schedule();
  };

  Widget.prototype.schedule = function () {
    if (this.stopped) return;
    var self = this;
    var delay = this.pollSeconds * Math.min(8, Math.pow(2, this.failures));
    global.clearTimeout(this.timer);
    this.timer = global.setTimeout(function () {
      self.poll();
    }, delay * 1000);
  };

  Widget.prototype.show = function (message) {
    var doc = this.doc;
    var self = this;
    var modal = message.display === "modal";
    injectStyles(doc);
    this.handled[message.id] = true;

    var box = el(doc, "div", modal ? "modal" : "banner");
    box.setAttribute("data-onramp-message", String(message.id));
    var titleId = PREFIX + "-title-" + message.id;
    if (modal) {
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-modal", "true");
    } else {
      box.setAttribute("role", "status");
      box.setAttribute("aria-live", "polite");
    }
    var content = el(doc, "div", "content");
    if (message.subject) {
      var title = el(doc, "strong", "title", message.subject);
      title.id = titleId;
      content.appendChild(title);
      box.setAttribute("aria-labelledby", titleId);
    } else {
      box.setAttribute("aria-label", "Message");
    }
    content.appendChild(el(doc, "p", "body", message.body || ""));
    var cta = message.cta && safeUrl(message.cta.url);
    if (cta) {
      var link = el(doc, "a", "cta", message.cta.label || "Open");
      link.href = cta;
      link.rel = "noopener";
      link.addEventListener("click", function () {
        self.report(message.id, "clicked");
      });
      content.appendChild(link);
    }
    var close = el(doc, "button", "close", "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", "Close");
    close.addEventListener("click", function () {
      self.dismiss();
    });

    var root = box;
    if (modal) {
      box.appendChild(close);
      box.appendChild(content);
      root = el(doc, "div", "backdrop");
      root.appendChild(box);
    } else {
      box.appendChild(content);
      box.appendChild(close);
    }
    root.addEventListener("keydown", function (event) {
      if (event.key === "Escape") self.dismiss();
    });
    this.previousFocus = doc.activeElement;
    this.container.appendChild(root);
    this.shown = { message: message, root: root };
    if (modal) close.focus();
    this.report(message.id, "seen");
  };

  Widget.prototype.dismiss = function () {
    if (!this.shown) return;
    var shown = this.shown;
    this.shown = null;
    if (shown.root.parentNode) shown.root.parentNode.removeChild(shown.root);
    if (this.previousFocus && this.previousFocus.focus) this.previousFocus.focus();
    return this.report(shown.message.id, "dismissed");
  };

  Widget.prototype.start = function () {
    this.poll();
    return this;
  };

  Widget.prototype.stop = function () {
    this.stopped = true;
    global.clearTimeout(this.timer);
  };

  var Onramp = global.Onramp || {};
  Onramp.analyticsJsIds = analyticsJsIds;
  Onramp.init = function (options) {
    if (Onramp.widget) Onramp.widget.stop();
    Onramp.widget = new Widget(options).start();
    return Onramp.widget;
  };
  global.Onramp = Onramp;

  var script = global.document && global.document.currentScript;
  var configId = script && script.getAttribute("data-config");
  if (configId) {
    var start = function () {
      var node = global.document.getElementById(configId);
      if (node) Onramp.init(JSON.parse(node.textContent));
    };
    if (global.document.readyState === "loading") {
      global.document.addEventListener("DOMContentLoaded", start);
    } else {
      start();
    }
  }
})(window);
