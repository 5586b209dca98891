// A QR code encoder for the one thing this site draws in the browser: the
// login link an IP-only relay's page makes. Byte mode, error correction
// level M, versions 1 to 10 (up to 213 bytes), mask pattern 0; everything
// else is drawn on the server. Exposes chatmailQr(text) -> rows of
// booleans (dark = true), without the quiet zone.
"use strict";
(function () {
  // Per version 1..10 at level M: error correction codewords per block,
  // and blocks.
  const ECC_PER_BLOCK = [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26];
  const BLOCKS = [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5];
  const FORMAT_LEVEL_M = 0;

  // Modules available for data and error correction in a version.
  function rawModules(version) {
    let result = (16 * version + 128) * version + 64;
    if (version >= 2) {
      const align = Math.floor(version / 7) + 2;
      result -= (25 * align - 10) * align - 55;
      if (version >= 7) result -= 36;
    }
    return result;
  }

  function dataCodewords(version) {
    return Math.floor(rawModules(version) / 8) - ECC_PER_BLOCK[version] * BLOCKS[version];
  }

  // GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1.
  function gfMultiply(x, y) {
    let z = 0;
    for (let i = 7; i >= 0; i--) {
      z = (z << 1) ^ ((z >>> 7) * 0x11d);
      z ^= ((y >>> i) & 1) * x;
    }
    return z;
  }

  function rsDivisor(degree) {
    const result = new Array(degree).fill(0);
    result[degree - 1] = 1;
    let root = 1;
    for (let i = 0; i < degree; i++) {
      for (let j = 0; j < degree; j++) {
        result[j] = gfMultiply(result[j], root);
        if (j + 1 < degree) result[j] ^= result[j + 1];
      }
      root = gfMultiply(root, 2);
    }
    return result;
  }

  function rsRemainder(data, divisor) {
    const result = new Array(divisor.length).fill(0);
    for (const byte of data) {
      const factor = byte ^ result.shift();
      result.push(0);
      divisor.forEach((coefficient, i) => {
        result[i] ^= gfMultiply(coefficient, factor);
      });
    }
    return result;
  }

  // The data codewords: mode, length, bytes, terminator and padding.
  function encodeData(bytes, version) {
    const bits = [];
    const put = (value, length) => {
      for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    put(0x4, 4);
    put(bytes.length, version <= 9 ? 8 : 16);
    bytes.forEach((byte) => put(byte, 8));
    const capacity = dataCodewords(version) * 8;
    put(0, Math.min(4, capacity - bits.length));
    put(0, (8 - (bits.length % 8)) % 8);
    for (let pad = 0xec; bits.length < capacity; pad ^= 0xec ^ 0x11) put(pad, 8);
    const codewords = [];
    for (let i = 0; i < bits.length; i += 8) {
      codewords.push(bits.slice(i, i + 8).reduce((byte, bit) => (byte << 1) | bit, 0));
    }
    return codewords;
  }

  // Splits into blocks, adds each block's error correction, interleaves.
  function interleave(data, version) {
    const blocks = BLOCKS[version];
    const eccLength = ECC_PER_BLOCK[version];
    const raw = Math.floor(rawModules(version) / 8);
    const shortBlocks = blocks - (raw % blocks);
    const shortLength = Math.floor(raw / blocks);
    const divisor = rsDivisor(eccLength);
    const all = [];
    for (let i = 0, k = 0; i < blocks; i++) {
      const length = shortLength - eccLength + (i < shortBlocks ? 0 : 1);
      const block = data.slice(k, k + length);
      k += length;
      const ecc = rsRemainder(block, divisor);
      if (i < shortBlocks) block.push(0);
      all.push(block.concat(ecc));
    }
    const result = [];
    for (let i = 0; i < all[0].length; i++) {
      all.forEach((block, j) => {
        if (i !== shortLength - eccLength || j >= shortBlocks) result.push(block[i]);
      });
    }
    return result;
  }

  function alignmentPositions(version, size) {
    if (version === 1) return [];
    const count = Math.floor(version / 7) + 2;
    const step = Math.ceil((version * 4 + 4) / (count * 2 - 2)) * 2;
    const result = [6];
    for (let position = size - 7; result.length < count; position -= step) {
      result.splice(1, 0, position);
    }
    return result;
  }

  window.chatmailQr = function (text) {
    const bytes = Array.from(new TextEncoder().encode(text));
    let version = 1;
    while (version <= 10 && bytes.length + 2 + (version > 9 ? 1 : 0) > dataCodewords(version)) {
      version++;
    }
    if (version > 10) throw new Error("text too long for this QR encoder");
    const size = version * 4 + 17;
    const dark = [];
    const reserved = [];
    for (let y = 0; y < size; y++) {
      dark.push(new Array(size).fill(false));
      reserved.push(new Array(size).fill(false));
    }
    const fixed = (x, y, isDark) => {
      dark[y][x] = isDark;
      reserved[y][x] = true;
    };
    for (let i = 0; i < size; i++) {
      fixed(6, i, i % 2 === 0);
      fixed(i, 6, i % 2 === 0);
    }
    for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          const distance = Math.max(Math.abs(dx), Math.abs(dy));
          if (x >= 0 && x < size && y >= 0 && y < size) fixed(x, y, distance !== 2 && distance !== 4);
        }
      }
    }
    const positions = alignmentPositions(version, size);
    const last = positions.length - 1;
    positions.forEach((ax, i) => {
      positions.forEach((ay, j) => {
        const atFinder = (i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0);
        if (atFinder) return;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) fixed(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
        }
      });
    });
    const bit = (value, i) => ((value >>> i) & 1) !== 0;
    // Format information: level and mask, BCH-protected, masked.
    const drawFormat = (mask) => {
      const data = (FORMAT_LEVEL_M << 3) | mask;
      let remainder = data;
      for (let i = 0; i < 10; i++) remainder = (remainder << 1) ^ ((remainder >>> 9) * 0x537);
      const bits = ((data << 10) | remainder) ^ 0x5412;
      for (let i = 0; i <= 5; i++) fixed(8, i, bit(bits, i));
      fixed(8, 7, bit(bits, 6));
      fixed(8, 8, bit(bits, 7));
      fixed(7, 8, bit(bits, 8));
      for (let i = 9; i < 15; i++) fixed(14 - i, 8, bit(bits, i));
      for (let i = 0; i < 8; i++) fixed(size - 1 - i, 8, bit(bits, i));
      for (let i = 8; i < 15; i++) fixed(8, size - 15 + i, bit(bits, i));
      fixed(8, size - 8, true);
    };
    drawFormat(0);
    if (version >= 7) {
      let remainder = version;
      for (let i = 0; i < 12; i++) remainder = (remainder << 1) ^ ((remainder >>> 11) * 0x1f25);
      const bits = (version << 12) | remainder;
      for (let i = 0; i < 18; i++) {
        const a = size - 11 + (i % 3);
        const b = Math.floor(i / 3);
        fixed(a, b, bit(bits, i));
        fixed(b, a, bit(bits, i));
      }
    }
    const codewords = interleave(encodeData(bytes, version), version);
    let index = 0;
    for (let right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vertical = 0; vertical < size; vertical++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const upward = ((right + 1) & 2) === 0;
          const y = upward ? size - 1 - vertical : vertical;
          if (!reserved[y][x] && index < codewords.length * 8) {
            dark[y][x] = bit(codewords[index >>> 3], 7 - (index & 7));
            index++;
          }
        }
      }
    }
    // Mask pattern 0: modules where x + y is even are inverted.
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (!reserved[y][x] && (x + y) % 2 === 0) dark[y][x] = !dark[y][x];
      }
    }
    return dark;
  };
})();
