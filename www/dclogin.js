// Makes a login link for an IP-only relay in the browser: a random
// account name and password (the relay creates the account at its first
// login), and draws it as a QR code with qr.js.
"use strict";
(function () {
  const settings = document.getElementById("dclogin").dataset;
  const LOWER = "abcdefghijklmnopqrstuvwxyz0123456789";
  const PASSWORD = LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

  // Uniform characters from the browser's cryptographic random source:
  // bytes at or above the largest multiple of the alphabet's size are
  // drawn again.
  function randomText(alphabet, length) {
    const limit = 256 - (256 % alphabet.length);
    let text = "";
    while (text.length < length) {
      const bytes = new Uint8Array(length * 2);
      window.crypto.getRandomValues(bytes);
      for (const byte of bytes) {
        if (byte < limit && text.length < length) text += alphabet[byte % alphabet.length];
      }
    }
    return text;
  }

  const name = randomText(LOWER, Number(settings.nameLength));
  const password = randomText(PASSWORD, Number(settings.passwordLength));
  const host = settings.host;
  const link =
    "dclogin:" + name + "@" + settings.domain +
    "?p=" + password + "&v=1" +
    "&ih=" + host + "&ip=" + settings.imapPort + "&is=ssl" +
    "&sh=" + host + "&sp=" + settings.smtpPort + "&ss=ssl" +
    "&ic=3";

  const modules = window.chatmailQr(link);
  const quiet = 4;
  const size = modules.length + 2 * quiet;
  let path = "";
  modules.forEach((row, y) => {
    row.forEach((isDark, x) => {
      if (isDark) path += "M" + (x + quiet) + " " + (y + quiet) + "h1v1h-1z";
    });
  });
  const svg = document.getElementById("account-qr");
  svg.setAttribute("viewBox", "0 0 " + size + " " + size);
  const ns = "http://www.w3.org/2000/svg";
  const background = document.createElementNS(ns, "rect");
  background.setAttribute("width", size);
  background.setAttribute("height", size);
  background.setAttribute("fill", "#fff");
  const shape = document.createElementNS(ns, "path");
  shape.setAttribute("d", path);
  shape.setAttribute("fill", "#000");
  svg.replaceChildren(background, shape);
  document.getElementById("account-link").href = link;
  const text = document.getElementById("account-text");
  text.href = link;
  text.textContent = link;
})();
