// An independent DPoP client (RFC 9449) for the end-to-end tests, using only node:crypto: it makes
// an EC P-256 key pair, exports the public JWK, computes the RFC 7638 thumbprint itself and signs
// the proof with ES256 in IEEE P1363 form (r || s, the JWS encoding; node's default is DER).
//
//   node dpop-node.mjs --key FILE --method GET --htu URL [--ath ATH] [--iat UNIX] [--jti JTI]
//
// --key FILE holds the private key as a JWK: made on the first run, read on the later ones, so a
// caller can learn the thumbprint first (to bind an access token to it) and then ask for proofs for
// that token. Without --ath the proof has no `ath`; --iat defaults to now, --jti to 16 random bytes.
// Prints one JSON line: {"jkt": <thumbprint>, "jwk": <public JWK>, "proof": <compact JWS>}.

import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { argv, exit, stderr, stdout } from "node:process";

function usage(message) {
  stderr.write(`dpop-node.mjs: ${message}\n` +
    "usage: node dpop-node.mjs --key FILE --method M --htu URL [--ath ATH] [--iat UNIX] [--jti JTI]\n");
  exit(2);
}

const known = new Set(["--key", "--method", "--htu", "--ath", "--iat", "--jti"]);
const args = {};
for (let i = 2; i < argv.length; i += 2) {
  if (!known.has(argv[i])) usage(`unknown argument ${JSON.stringify(argv[i])}`);
  if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
  args[argv[i].slice(2)] = argv[i + 1];
}
for (const required of ["key", "method", "htu"]) {
  if (args[required] === undefined) usage(`--${required} is required`);
}

const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

let privateKey;
if (existsSync(args.key)) {
  privateKey = createPrivateKey({ key: JSON.parse(readFileSync(args.key, "utf8")), format: "jwk" });
} else {
  ({ privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" }));
  writeFileSync(args.key, JSON.stringify(privateKey.export({ format: "jwk" })), { mode: 0o600 });
}
const exported = createPublicKey(privateKey).export({ format: "jwk" });
if (exported.kty !== "EC" || exported.crv !== "P-256" || "d" in exported) {
  usage(`unexpected public JWK ${JSON.stringify(exported)}`);
}
const jwk = { kty: exported.kty, crv: exported.crv, x: exported.x, y: exported.y };

// RFC 7638 §3.2: the required members of an EC key, in lexicographic order, no whitespace.
const canonical = `{"crv":"${jwk.crv}","kty":"${jwk.kty}","x":"${jwk.x}","y":"${jwk.y}"}`;
const jkt = b64url(createHash("sha256").update(canonical, "utf8").digest());

const iat = args.iat === undefined ? Math.floor(Date.now() / 1000) : Number(args.iat);
if (!Number.isInteger(iat)) usage(`--iat must be an integer, not ${JSON.stringify(args.iat)}`);
const claims = {
  jti: args.jti ?? b64url(randomBytes(16)),
  htm: args.method,
  htu: args.htu,
  iat,
};
if (args.ath !== undefined) claims.ath = args.ath;
const header = { typ: "dpop+jwt", alg: "ES256", jwk };

const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
const signature = sign("sha256", Buffer.from(input, "ascii"), { key: privateKey, dsaEncoding: "ieee-p1363" });
if (signature.length !== 64) usage(`an ES256 signature is 64 bytes, got ${signature.length}`);

stdout.write(JSON.stringify({ jkt, jwk, proof: `${input}.${b64url(signature)}` }) + "\n");
