/** PKCE (RFC 7636, S256) and random values, with the Web Crypto API of browsers and Node 20. */

function webCrypto(): Crypto {
  const crypto = (globalThis as { crypto?: Crypto }).crypto;
  if (!crypto?.subtle) throw new TypeError("the Web Crypto API is not available (a secure context is needed)");
  return crypto;
}

export function base64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

export function base64url(bytes: Uint8Array): string {
  return base64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** `size` random bytes, base64url-encoded. */
export function randomString(size: number): string {
  return base64url(webCrypto().getRandomValues(new Uint8Array(size)));
}

/** A verifier (43 characters from the unreserved set) and its S256 challenge. */
export async function pkcePair(): Promise<{ verifier: string; challenge: string }> {
  const verifier = randomString(32);
  const digest = await webCrypto().subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return { verifier, challenge: base64url(new Uint8Array(digest)) };
}
