// The sign-in page: a login link carries its secret in the URL fragment (never sent to a
// server or a log). Move it into the form and off the address bar; the person presses
// Sign in (a POST), so a mail scanner that merely fetches the link consumes nothing.
(function () {
  'use strict';
  var secret = location.hash.replace(/^#/, '');
  if (!secret) return;
  history.replaceState(null, '', location.pathname);
  var field = document.getElementById('token');
  if (!field) return;
  field.value = decodeURIComponent(secret);
  var button = document.getElementById('sign-in');
  if (button) button.focus();
})();
