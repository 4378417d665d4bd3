// An independent verifier of aifhub's credentials: Digital Bazaar's VC libraries, not aifhub's code.
// stdin: {"credential": {...}, "documents": {url: document}} (documents: status lists, did:web DID
// documents, as fetched from the service). The JSON-LD contexts come from aifhub's bundled copies; every
// other URL is refused, so nothing is fetched from the network. did:key is resolved from the key itself.
// stdout: {"verified": bool, "error": "...", "statusVerified": bool|null}
import {readFileSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import * as vc from '@digitalbazaar/vc';
import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import {cryptosuite as eddsaRdfc2022} from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import {checkStatus} from '@digitalbazaar/vc-bitstring-status-list';

const here = dirname(fileURLToPath(import.meta.url));
const contextsDir = join(here, '..', '..', 'hub', 'aifhub', 'credentials', 'contexts');
const CONTEXTS = {
  'https://www.w3.org/ns/credentials/v2': 'credentials-v2.jsonld',
  'https://www.w3.org/2018/credentials/v1': 'credentials-v1.jsonld',
  'https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json': 'ob-context-3.0.3.json',
  'https://purl.imsglobal.org/spec/ob/v3p0/context.json': 'ob-context-3.0.0.json',
  'https://w3id.org/security/data-integrity/v2': 'data-integrity-v2.jsonld',
  'https://w3id.org/security/data-integrity/v1': 'data-integrity-v1.jsonld',
  'https://w3id.org/security/multikey/v1': 'multikey-v1.jsonld',
};

const input = JSON.parse(readFileSync(0, 'utf8'));
const extra = input.documents || {};

async function didKeyDocument(url) {
  const did = url.split('#')[0];
  const fingerprint = did.slice('did:key:'.length);
  const key = await Ed25519Multikey.from({
    '@context': 'https://w3id.org/security/multikey/v1',
    type: 'Multikey',
    id: `${did}#${fingerprint}`,
    controller: did,
    publicKeyMultibase: fingerprint,
  });
  const method = await key.export({publicKey: true, includeContext: false});
  if(url.includes('#')) {
    return {'@context': 'https://w3id.org/security/multikey/v1', ...method};
  }
  return {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: did,
    verificationMethod: [method],
    assertionMethod: [method.id],
  };
}

async function documentLoader(url) {
  let document;
  if(url in CONTEXTS) {
    document = JSON.parse(readFileSync(join(contextsDir, CONTEXTS[url]), 'utf8'));
  } else if(url in extra) {
    document = extra[url];
  } else if(url.startsWith('did:key:')) {
    document = await didKeyDocument(url);
  } else if(url.startsWith('did:web:') && url.split('#')[0] in extra) {
    const didDoc = extra[url.split('#')[0]];
    document = url.includes('#') ?
      {'@context': 'https://w3id.org/security/multikey/v1',
        ...didDoc.verificationMethod.find(m => m.id === url)} : didDoc;
  } else {
    throw new Error(`Document ${url} is not available offline.`);
  }
  return {contextUrl: null, documentUrl: url, document};
}

const suite = new DataIntegrityProof({cryptosuite: eddsaRdfc2022});
let out;
try {
  const result = await vc.verifyCredential({
    credential: input.credential, suite, documentLoader, checkStatus,
  });
  const errors = [];
  const collect = e => {
    if(!e) return;
    if(Array.isArray(e)) { e.forEach(collect); return; }
    errors.push(e.message || String(e));
    if(e.errors) collect(e.errors);
  };
  collect(result.error);
  for(const r of result.results || []) collect(r.error);
  if(result.statusResult) collect(result.statusResult.error);
  const status = result.statusResult && result.statusResult.results ?
    result.statusResult.results.map(r => r.status) : null;
  // the libraries report a revoked credential as verified, with its status bit set: a verifier refuses it
  const revoked = (status || []).some(Boolean);
  if(revoked) errors.push('The credential is revoked (its bit in the status list is set).');
  out = {verified: result.verified && !revoked, proofVerified: result.verified,
    statusVerified: result.statusResult ? result.statusResult.verified : null, revoked, error: errors.join('; ')};
} catch(e) {
  out = {verified: false, error: e.message};
}
process.stdout.write(JSON.stringify(out) + '\n');
