/* Clarion service worker, served at /sw.js (root scope).
 * Shows Web Push messages (payload JSON {"id","title","body","data","url","icon"}) and opens
 * the message's url on click, focusing an open tab of that url when there is one.
 * A {"type":"read","id"} push (the message was read on another device or tab) closes the
 * notification shown for that id instead.
 * No dependencies, no build step. See docs/realtime.md.
 */
"use strict";

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", function (event) {
  var message = {};
  if (event.data) {
    try {
      message = event.data.json();
    } catch (e) {
      message = { title: "Notification", body: event.data.text() };
    }
  }
  if (message.type === "read") {
    event.waitUntil(closeRead(message.id));
    return;
  }
  var options = {
    body: message.body || "",
    icon: message.icon || undefined,
    // One notification per message: a re-delivered push replaces rather than duplicates.
    tag: message.id !== undefined ? "clarion-" + message.id : undefined,
    data: { id: message.id, url: message.url || "", data: message.data || {} },
  };
  event.waitUntil(
    self.registration.showNotification(message.title || "Notification", options).then(function () {
      return self.clients.matchAll({ type: "window", includeUncontrolled: true });
    }).then(function (windows) {
      // Open pages running clarion.js may ack and clear it themselves.
      windows.forEach(function (client) {
        client.postMessage({ type: "clarion-push", message: message });
      });
    })
  );
});

function closeRead(id) {
  return self.registration.getNotifications().then(function (shown) {
    shown.forEach(function (notification) {
      var data = notification.data || {};
      if (notification.tag === "clarion-" + id || data.id === id) notification.close();
    });
    return self.clients.matchAll({ type: "window", includeUncontrolled: true });
  }).then(function (windows) {
    windows.forEach(function (client) {
      client.postMessage({ type: "clarion-read", id: id });
    });
  });
}

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === url && "focus" in windows[i]) {
          return windows[i].focus();
        }
      }
      if (self.clients.openWindow) {
        return self.clients.openWindow(url);
      }
      return undefined;
    })
  );
});
