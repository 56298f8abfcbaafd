/* Clarion browser client: one file, no build step, no dependencies.
 *
 *   var clarion = new Clarion({url: "https://push.example.com", token: "ct_..."});
 *   clarion.on("notification", function (message) { ... });   // {id, cursor, title, body, data, url, icon, created_at, read_at}
 *   clarion.on("read", function (id) { ... });                // read on another tab or device: clear it
 *   clarion.on("status", function (status, detail) { ... });  // connecting, open, polling, reconnecting, unauthorized, replaced, closed
 *   clarion.connect();
 *
 * WebSocket first (/ws/v1/notifications/), resuming from the cursor kept in localStorage;
 * reconnects with capped exponential back-off and full jitter (after a drop that hits every
 * client of a server at once, such as a restart, first within a wider window, so they do not
 * all come back in the same second); pings every ~25 s and
 * reconnects when the server goes quiet; falls back to long-polling (/api/v1/poll/) when
 * WebSockets cannot open or keep dying. See docs/realtime.md for every option.
 *
 * The token never goes in a URL (URLs end up in access logs): long-polls and acks send
 * `Authorization: Token`; a WebSocket cannot carry headers, so the token rides in the
 * Sec-WebSocket-Protocol offer ["clarion.v1", "clarion.token.<token>"] and the server
 * answers "clarion.v1".
 */
(function (root) {
  "use strict";

  var DEFAULTS = {
    url: null, // Clarion's base URL; default: this page's origin
    token: null, // end-user token; null: the Django session of this origin
    autoAck: true, // ack each notification on receipt (the server then cancels held-back push)
    showNotifications: false, // also show a browser notification when permission is granted
    transport: "auto", // "auto" (WebSocket, long-polling fallback), "websocket" or "poll"
    storage: null, // where the cursor is kept; default: localStorage when available
    storageKey: null, // default: "clarion:cursor:<url>:<user or token fingerprint>"
    user: null, // optional: the username, to keep one cursor per user in shared browsers
    heartbeatSecs: 25, // client ping interval; the server closes sockets silent for two
    reconnectBaseMs: 500, // back-off: random(0, min(cap, base * 2^attempt))
    reconnectCapMs: 30000,
    // After an established socket drops the way a server restart drops all of them (no close
    // frame, 1001, 1011, 1012, 1013, 4500), the first reconnect waits random(0, this): a node takes
    // about a thousand handshakes a second per process, so 10,000 clients need ~10 s between them.
    reconnectWindowMs: 10000,
    fallbackAfterFailures: 2, // WebSocket failures in a row before long-polling
    fallbackRetryMs: 300000, // while long-polling, try the WebSocket again this often
    pollTimeoutSecs: 30,
    serviceWorkerUrl: "/sw.js", // must be on the page's own origin (browsers require it)
  };
  var CLOSE_UNAUTHENTICATED = 4401;
  var CLOSE_BAD_REQUEST = 4400;
  var CLOSE_TOO_MANY_CONNECTIONS = 4409;
  var STABLE_CONNECTION_MS = 10000; // a socket open this long resets the back-off
  // Close codes of a drop that every client of a server sees at once: no close frame (1006, a
  // restart or a network path lost), going away, server error, restart, try again later.
  var HERD_CLOSE_CODES = [1001, 1006, 1011, 1012, 1013, 4500];
  var SUBPROTOCOL = "clarion.v1";
  var TOKEN_SUBPROTOCOL_PREFIX = "clarion.token.";
  // A subprotocol is an HTTP token (RFC 7230 tchar); tokens from this server always are.
  var SUBPROTOCOL_CHARS = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

  function fingerprint(text) {
    var hash = 0;
    for (var i = 0; i < text.length; i++) {
      hash = (hash * 31 + text.charCodeAt(i)) | 0;
    }
    return (hash >>> 0).toString(36);
  }

  function defaultStorage() {
    try {
      return root.localStorage || null;
    } catch (e) {
      return null; // disabled storage (privacy mode) throws on access
    }
  }

  function readCookie(name) {
    var match = (root.document && root.document.cookie || "").match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function base64UrlToBytes(text) {
    var padded = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = root.atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function Clarion(options) {
    this.options = {};
    for (var key in DEFAULTS) this.options[key] = DEFAULTS[key];
    for (key in options || {}) this.options[key] = options[key];
    var origin = root.location ? root.location.origin : "";
    this.baseUrl = (this.options.url || origin).replace(/\/+$/, "");
    this.storage = this.options.storage || defaultStorage();
    this.storageKey =
      this.options.storageKey ||
      "clarion:cursor:" + this.baseUrl + ":" + (this.options.user || (this.options.token ? fingerprint(this.options.token) : "session"));
    this.cursor = this._loadCursor();
    this.status = "idle";
    this.transport = null; // "websocket" or "poll" while connected
    this._handlers = {};
    this._socket = null;
    this._stopped = true;
    this._attempt = 0;
    this._wsFailures = 0;
    this._wsWorked = false; // a WebSocket has opened: WebSockets get through from here
    this._timers = {};
    this._shown = {};
    this._pollAbort = null;
    this._readCursor = null; // the last read position heard (WebSocket frames, poll answers)
  }

  Clarion.prototype.on = function (event, handler) {
    (this._handlers[event] = this._handlers[event] || []).push(handler);
    return this;
  };

  Clarion.prototype.off = function (event, handler) {
    this._handlers[event] = (this._handlers[event] || []).filter(function (h) {
      return h !== handler;
    });
    return this;
  };

  Clarion.prototype._emit = function (event) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this._handlers[event] || []).slice().forEach(function (handler) {
      try {
        handler.apply(null, args);
      } catch (e) {
        if (root.console) root.console.error("clarion: a '" + event + "' handler failed", e);
      }
    });
  };

  Clarion.prototype._setStatus = function (status, detail) {
    this.status = status;
    this._emit("status", status, detail || {});
  };

  /* -- lifecycle ------------------------------------------------------------------- */

  Clarion.prototype.connect = function () {
    if (!this._stopped) return this;
    this._stopped = false;
    var self = this;
    if (root.addEventListener && !this._onOnline) {
      this._onOnline = function () {
        if (!self._stopped && self.transport === null) self._reconnectNow();
      };
      root.addEventListener("online", this._onOnline);
    }
    if (this.options.transport === "poll" || typeof root.WebSocket !== "function") {
      this._startPolling();
    } else {
      this._openSocket();
    }
    return this;
  };

  Clarion.prototype.close = function () {
    this._stopped = true;
    this._clearTimers();
    this._closeSocket(1000);
    this._stopPolling();
    this.transport = null;
    if (this._onOnline && root.removeEventListener) {
      root.removeEventListener("online", this._onOnline);
      this._onOnline = null;
    }
    this._setStatus("closed");
  };

  Clarion.prototype._clearTimers = function () {
    for (var name in this._timers) clearTimeout(this._timers[name]);
    this._timers = {};
  };

  Clarion.prototype._later = function (name, ms, fn) {
    clearTimeout(this._timers[name]);
    var self = this;
    this._timers[name] = setTimeout(function () {
      delete self._timers[name];
      if (!self._stopped) fn.call(self);
    }, ms);
  };

  Clarion.prototype._backoffMs = function () {
    var ceiling = Math.min(this.options.reconnectCapMs, this.options.reconnectBaseMs * Math.pow(2, this._attempt));
    this._attempt = Math.min(this._attempt + 1, 30);
    return Math.floor(Math.random() * ceiling);
  };

  Clarion.prototype._reconnectNow = function () {
    this._attempt = 0;
    this._clearTimers();
    if (this.options.transport === "poll") this._startPolling();
    else this._openSocket();
  };

  Clarion.prototype._stopFor = function (status, detail) {
    this._stopped = true;
    this._clearTimers();
    this._stopPolling();
    this.transport = null;
    this._setStatus(status, detail);
  };

  /* -- cursor ---------------------------------------------------------------------- */

  Clarion.prototype._loadCursor = function () {
    try {
      var value = this.storage && this.storage.getItem(this.storageKey);
      return value && /^\d+$/.test(value) ? parseInt(value, 10) : null;
    } catch (e) {
      return null;
    }
  };

  Clarion.prototype._saveCursor = function (cursor) {
    this.cursor = cursor;
    try {
      if (this.storage) this.storage.setItem(this.storageKey, String(cursor));
    } catch (e) {
      /* storage full or disabled: the cursor still lives in memory */
    }
  };

  Clarion.prototype._forgetCursor = function () {
    this.cursor = null;
    try {
      if (this.storage) this.storage.removeItem(this.storageKey);
    } catch (e) {
      /* nothing stored */
    }
  };

  /* -- WebSocket ------------------------------------------------------------------- */

  Clarion.prototype._socketUrl = function (tokenInQuery) {
    var url = this.baseUrl.replace(/^http/, "ws") + "/ws/v1/notifications/";
    var query = [];
    // Only for a token that cannot be a subprotocol (never one of this server's own).
    if (tokenInQuery) query.push("token=" + encodeURIComponent(this.options.token));
    if (this.cursor !== null) query.push("after=" + this.cursor);
    if (this._readCursor !== null) query.push("read_after=" + this._readCursor);
    return query.length ? url + "?" + query.join("&") : url;
  };

  Clarion.prototype._newSocket = function () {
    var token = this.options.token;
    if (token && SUBPROTOCOL_CHARS.test(token)) {
      return new root.WebSocket(this._socketUrl(false), [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]);
    }
    return new root.WebSocket(this._socketUrl(Boolean(token)));
  };

  Clarion.prototype._openSocket = function () {
    var self = this;
    this._closeSocket(1000);
    this._setStatus(this._attempt ? "reconnecting" : "connecting", { transport: "websocket" });
    var socket;
    try {
      socket = this._newSocket();
    } catch (e) {
      this._socketFailed(false, 0);
      return;
    }
    this._socket = socket;
    var openedAt = null;
    socket.onopen = function () {
      if (self._socket !== socket) return;
      openedAt = Date.now();
      self._wsWorked = true;
      self.transport = "websocket";
      self._lastFrameAt = Date.now();
      self._setStatus("open", { transport: "websocket" });
      self._scheduleHeartbeat();
    };
    socket.onmessage = function (event) {
      if (self._socket !== socket) return;
      self._lastFrameAt = Date.now();
      if (openedAt && Date.now() - openedAt > STABLE_CONNECTION_MS) {
        self._attempt = 0;
        self._wsFailures = 0;
      }
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame.type === "notification") self._receive(frame, "websocket");
      else if (frame.type === "read") self._read(frame.id, frame.read_cursor);
      else if (frame.type === "error") self._emit("error", frame);
    };
    socket.onclose = function (event) {
      if (self._socket !== socket) return;
      self._socket = null;
      self.transport = null;
      clearTimeout(self._timers.heartbeat);
      if (self._stopped) return;
      if (event.code === CLOSE_UNAUTHENTICATED) return self._stopFor("unauthorized", { code: event.code });
      if (event.code === CLOSE_TOO_MANY_CONNECTIONS) return self._stopFor("replaced", { code: event.code });
      if (event.code === CLOSE_BAD_REQUEST) self._forgetCursor(); // a corrupt stored cursor: start from now
      var lived = openedAt ? Date.now() - openedAt : 0;
      self._socketFailed(openedAt !== null, lived, event.code);
    };
    socket.onerror = function () {
      /* onclose follows with the details */
    };
  };

  Clarion.prototype._socketFailed = function (opened, livedMs, code) {
    var stable = opened && livedMs >= STABLE_CONNECTION_MS;
    if (stable) {
      this._wsFailures = 0;
      this._attempt = 0;
    } else if (opened || !this._wsWorked) {
      this._wsFailures += 1; // died young, or WebSockets never got through
    }
    // Never opened after WebSockets worked here: the server is restarting or refusing a crowd
    // (503). Long-polling would land on the same server, so keep backing off instead.
    if (this.options.transport === "auto" && this._wsFailures >= this.options.fallbackAfterFailures) {
      this._startPolling();
      this._later("retrySocket", this.options.fallbackRetryMs, function () {
        this._stopPolling();
        this._wsFailures = 0;
        this._attempt = 0;
        this._openSocket();
      });
      return;
    }
    var herd = stable && HERD_CLOSE_CODES.indexOf(code) !== -1;
    var delay = herd ? Math.floor(Math.random() * this.options.reconnectWindowMs) : this._backoffMs();
    this._setStatus("reconnecting", { transport: "websocket", inMs: delay, code: code });
    this._later("reconnect", delay, this._openSocket);
  };

  Clarion.prototype._closeSocket = function (code) {
    var socket = this._socket;
    this._socket = null;
    clearTimeout(this._timers.heartbeat);
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(code);
      } catch (e) {
        /* already closing */
      }
    }
  };

  Clarion.prototype._scheduleHeartbeat = function () {
    var interval = this.options.heartbeatSecs * 1000;
    var jittered = interval * (0.8 + Math.random() * 0.4);
    this._later("heartbeat", jittered, function () {
      var socket = this._socket;
      if (!socket || socket.readyState !== 1) return;
      if (Date.now() - this._lastFrameAt > 2 * interval) {
        // No pong, no frame for two intervals: the connection is dead even if the browser says otherwise.
        this._closeSocket(4000);
        this.transport = null;
        this._socketFailed(true, 0);
        return;
      }
      socket.send('{"type":"ping"}');
      this._scheduleHeartbeat();
    });
  };

  /* -- long-polling ------------------------------------------------------------------ */

  Clarion.prototype._authHeaders = function (json) {
    var headers = {};
    if (json) headers["Content-Type"] = "application/json";
    if (this.options.token) headers.Authorization = "Token " + this.options.token;
    else {
      var csrf = readCookie("csrftoken");
      if (csrf) headers["X-CSRFToken"] = csrf;
    }
    return headers;
  };

  Clarion.prototype._credentials = function () {
    return this.options.token ? "omit" : "include";
  };

  Clarion.prototype._startPolling = function () {
    if (this._polling) return;
    this._polling = true;
    this.transport = "poll";
    this._setStatus("polling", { transport: "poll" });
    this._pollOnce();
  };

  Clarion.prototype._stopPolling = function () {
    this._polling = false;
    if (this._pollAbort) this._pollAbort.abort();
    this._pollAbort = null;
    clearTimeout(this._timers.poll);
    if (this.transport === "poll") this.transport = null;
  };

  Clarion.prototype._pollOnce = function () {
    var self = this;
    if (!this._polling || this._stopped) return;
    // The token goes in a header, never the URL: cross-origin, the browser sends a CORS
    // preflight first, which it then caches for the server's Access-Control-Max-Age (10 min).
    var query = ["timeout=" + this.options.pollTimeoutSecs];
    if (this.cursor !== null) query.push("after=" + this.cursor);
    if (this._readCursor !== null) query.push("read_after=" + this._readCursor);
    var abort = typeof AbortController === "function" ? new AbortController() : null;
    this._pollAbort = abort;
    root
      .fetch(this.baseUrl + "/api/v1/poll/?" + query.join("&"), {
        headers: this.options.token ? { Authorization: "Token " + this.options.token } : {},
        credentials: this._credentials(),
        cache: "no-store",
        signal: abort ? abort.signal : undefined,
      })
      .then(function (response) {
        if (response.status === 401) {
          self._stopFor("unauthorized", { status: 401 });
          return null;
        }
        if (!response.ok) throw new Error("poll answered " + response.status);
        return response.json();
      })
      .then(function (page) {
        if (!page || !self._polling || self._pollAbort !== abort) return;
        self._attempt = 0;
        if (self.status !== "polling") self._setStatus("polling", { transport: "poll" });
        page.results.forEach(function (message) {
          self._receive(message, "poll");
        });
        if (self.cursor === null || page.cursor > self.cursor) self._saveCursor(page.cursor);
        // Reads made on other clients since the last answer (in memory: a new page starts from now).
        (page.read || []).forEach(function (id) {
          self._read(id);
        });
        self._read(null, page.read_cursor);
        self._pollOnce();
      })
      .catch(function (error) {
        if (!self._polling || self._pollAbort !== abort || (error && error.name === "AbortError")) return;
        var delay = self._backoffMs();
        self._setStatus("reconnecting", { transport: "poll", inMs: delay });
        self._later("poll", delay, self._pollOnce);
      });
  };

  /* -- messages ---------------------------------------------------------------------- */

  Clarion.prototype._receive = function (message, via) {
    if (message.type) {
      message = Object.assign({}, message);
      delete message.type;
    }
    this._saveCursor(message.cursor);
    this._emit("notification", message, { transport: via });
    if (this.options.showNotifications) this._show(message);
    if (this.options.autoAck) this.ack(message.id);
  };

  Clarion.prototype._read = function (id, readCursor) {
    // The read position to resume from after a reconnect (read_after), kept in memory.
    if (typeof readCursor === "number" && (this._readCursor === null || readCursor > this._readCursor)) {
      this._readCursor = readCursor;
    }
    if (id === null) return;
    var shown = this._shown[id];
    if (shown) {
      shown.close();
      delete this._shown[id];
    }
    this._emit("read", id);
  };

  /** Acknowledge a message: marks it delivered, cancels held-back push, clears it on other clients. */
  Clarion.prototype.ack = function (id) {
    var socket = this._socket;
    if (socket && socket.readyState === 1) {
      socket.send(JSON.stringify({ type: "ack", id: id }));
      return Promise.resolve(true);
    }
    return root
      .fetch(this.baseUrl + "/api/v1/inbox/" + encodeURIComponent(id) + "/ack/", {
        method: "POST",
        headers: this._authHeaders(false),
        credentials: this._credentials(),
      })
      .then(function (response) {
        return response.ok;
      })
      .catch(function () {
        return false;
      });
  };

  Clarion.prototype._show = function (message) {
    if (typeof root.Notification !== "function" || root.Notification.permission !== "granted") return;
    try {
      var shown = new root.Notification(message.title || "Notification", {
        body: message.body || "",
        icon: message.icon || undefined,
        tag: "clarion-" + message.id,
      });
      var self = this;
      shown.onclick = function () {
        if (message.url) root.open(message.url, "_blank");
        else if (root.focus) root.focus();
        shown.close();
      };
      shown.onclose = function () {
        if (self._shown[message.id] === shown) delete self._shown[message.id];
      };
      this._shown[message.id] = shown;
    } catch (e) {
      /* some browsers (Android Chrome) only show notifications from a service worker */
    }
  };

  /** Ask for permission to show notifications; resolves to "granted", "denied" or "default". */
  Clarion.prototype.requestPermission = function () {
    if (typeof root.Notification !== "function") return Promise.resolve("denied");
    return Promise.resolve(root.Notification.requestPermission());
  };

  /* -- Web Push ------------------------------------------------------------------------ */

  /**
   * Register the service worker, subscribe with the server's VAPID key and register the
   * subscription as a device (platform "webpush"). Resolves to the device.
   * The app (options.app, else the constructor's `app`, else the server's default app) picks
   * the VAPID key and is the device's app.
   */
  Clarion.prototype.enableWebPush = function (options) {
    var self = this;
    options = options || {};
    var app = options.app || self.options.app || "";
    if (!root.navigator || !root.navigator.serviceWorker || typeof root.PushManager !== "function") {
      return Promise.reject(new Error("web_push_unsupported"));
    }
    var registration;
    return this.requestPermission()
      .then(function (permission) {
        if (permission !== "granted") throw new Error("permission_" + permission);
        var keyUrl = self.baseUrl + "/api/v1/webpush/key/" + (app ? "?app=" + encodeURIComponent(app) : "");
        return root.fetch(keyUrl, { credentials: "omit" });
      })
      .then(function (response) {
        if (response.status === 404) throw new Error("webpush_not_configured");
        if (!response.ok) throw new Error("webpush_key_unavailable");
        return response.json();
      })
      .then(function (body) {
        return root.navigator.serviceWorker
          .register(options.serviceWorkerUrl || self.options.serviceWorkerUrl, { scope: "/" })
          .then(function () {
            return root.navigator.serviceWorker.ready;
          })
          .then(function (ready) {
            registration = ready;
            return registration.pushManager.getSubscription();
          })
          .then(function (existing) {
            var key = base64UrlToBytes(body.public_key);
            if (existing) {
              var current = existing.options && existing.options.applicationServerKey;
              var same = current && new Uint8Array(current).join() === key.join();
              if (same) return existing;
              return existing.unsubscribe().then(function () {
                return registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
              });
            }
            return registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
          });
      })
      .then(function (subscription) {
        var json = subscription.toJSON();
        return root.fetch(self.baseUrl + "/api/v1/devices/", {
          method: "POST",
          headers: self._authHeaders(true),
          credentials: self._credentials(),
          body: JSON.stringify({
            platform: "webpush",
            subscription: { endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } },
            name: options.name || "Browser",
            app: app || null,
          }),
        });
      })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) {
            var error = new Error((body.error && body.error.code) || "device_registration_failed");
            error.body = body;
            throw error;
          }
          return body;
        });
      });
  };

  Clarion.VERSION = "1.0.0";
  if (typeof module === "object" && module.exports) module.exports = Clarion;
  else root.Clarion = Clarion;
})(typeof self !== "undefined" ? self : this);
