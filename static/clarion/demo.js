// The demo page (templates/realtime/demo.html); a file, as the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var TOKEN_KEY = "clarion-demo:token";
  var USER_KEY = "clarion-demo:user";
  var params = new URLSearchParams(location.search);
  var sessionUser = document.body.dataset.sessionUser || "";
  var state = { client: null, received: [], statuses: [] };
  window.clarionDemo = state;

  function $(id) { return document.getElementById(id); }
  function say(text) { $("message").textContent = text; }
  function csrf() {
    var match = document.cookie.match(/(?:^|; )csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }
  function token() { return localStorage.getItem(TOKEN_KEY); }
  function headers() {
    var h = { "Content-Type": "application/json" };
    if (token()) h.Authorization = "Token " + token(); else h["X-CSRFToken"] = csrf();
    return h;
  }

  function render(message) {
    var item = document.createElement("li");
    item.dataset.id = message.id;
    var title = document.createElement("div");
    title.className = "title";
    title.textContent = message.title || "(no title)";
    var body = document.createElement("div");
    body.textContent = message.body || "";
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "#" + message.id + " · cursor " + message.cursor + " · " + new Date(message.created_at).toLocaleTimeString();
    item.append(title, body, meta);
    $("notifications").prepend(item);
  }

  function start(user) {
    $("signin").classList.add("hidden");
    $("live").classList.remove("hidden");
    $("who").textContent = user;
    document.querySelectorAll(".who-name").forEach(function (el) { el.textContent = user; });
    var client = new Clarion({
      token: token(),
      user: user,
      transport: params.get("transport") || "auto",
      showNotifications: true,
    });
    state.client = client;
    client.on("status", function (status, detail) {
      state.statuses.push(status);
      $("status").textContent = status;
      $("status").dataset.state = status;
      $("transport").textContent = client.transport ? "via " + client.transport : "";
      if (status === "unauthorized") { say("Your sign-in expired; sign in again."); signOut(); }
      if (status === "replaced") say("Too many open connections; this tab stopped receiving. Reload to resume.");
    });
    client.on("notification", function (message, info) {
      state.received.push({ id: message.id, cursor: message.cursor, title: message.title, transport: info.transport });
      render(message);
    });
    client.on("read", function (id) {
      var item = document.querySelector('#notifications li[data-id="' + id + '"]');
      if (item) item.classList.add("read");
    });
    client.connect();
  }

  function signOut() {
    if (state.client) state.client.close();
    state.client = null;
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    if (sessionUser) { location.href = "/admin/logout/"; return; }
    $("live").classList.add("hidden");
    $("signin").classList.remove("hidden");
  }

  $("signin-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var username = $("username").value;
    fetch("/api/v1/auth/token/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "omit",
      body: JSON.stringify({ username: username, password: $("password").value }),
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error ? body.error.message : "Sign-in failed.");
        localStorage.setItem(TOKEN_KEY, body.token);
        localStorage.setItem(USER_KEY, username);
        $("password").value = "";
        say("");
        start(username);
      });
    }).catch(function (error) { alert(error.message); });
  });

  $("send-test").addEventListener("click", function () {
    var n = state.received.length + 1;
    fetch("/api/v1/me/test-notification/", {
      method: "POST",
      headers: headers(),
      credentials: token() ? "omit" : "same-origin",
      body: JSON.stringify({ title: "Test " + n, body: "Sent at " + new Date().toLocaleTimeString() }),
    }).then(function (response) {
      return response.json().then(function (body) {
        say(response.ok ? "Sent (#" + body.id + "); it should appear below in a moment." : body.error.message);
      });
    });
  });

  $("enable-notifications").addEventListener("click", function () {
    if (!state.client) return;
    state.client.requestPermission().then(function (permission) {
      say(permission === "granted" ? "Browser notifications on." : "Browser notifications: " + permission + ".");
    });
  });

  $("enable-webpush").addEventListener("click", function () {
    if (!state.client) return;
    say("Enabling Web Push…");
    state.client.enableWebPush({ name: navigator.userAgent.split(" ").pop() }).then(function (device) {
      say("Web Push on (device #" + device.id + "). Close this tab and send again with \"route\": \"push\".");
    }).catch(function (error) { say("Web Push failed: " + error.message); });
  });

  $("signout").addEventListener("click", signOut);

  if (sessionUser) start(sessionUser);
  else if (token() && localStorage.getItem(USER_KEY)) start(localStorage.getItem(USER_KEY));
})();
