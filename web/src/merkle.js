// The Merkle proof a node sends with a segment (x-mhc-merkle-proof, x-mhc-segment-index
// "i/n"), checked against the root of the signed manifest: leaves are the segments' BLAKE3
// hashes, inner nodes BLAKE3(0x01 ‖ left ‖ right) (manifest/src/merkle.rs), and the proof is
// rs_merkle's: siblings bottom-up, a lone right-most node promoted unchanged, using no hash.

import { equalBytes, fromHex } from './manifest.js';

function inner(blake3, left, right) {
  const buf = new Uint8Array(65);
  buf[0] = 0x01;
  buf.set(left, 1);
  buf.set(right, 33);
  return blake3(buf);
}

// Why the proof headers do not prove `leaf` is segment `index` of `total` under `root`, or
// null when they do.
export function proofProblem(blake3, leaf, index, total, proofHex, indexHeader, root) {
  if (indexHeader !== `${index}/${total}`) return `it says it is segment ${indexHeader}, not ${index}/${total}`;
  let proof;
  try {
    proof = fromHex(proofHex.trim());
  } catch (e) {
    return e.message;
  }
  if (proof.length % 32 !== 0) return 'its Merkle proof is not a whole number of hashes';
  let h = leaf;
  let i = index;
  let size = total;
  let k = 0;
  const next = () => (k + 32 <= proof.length ? proof.subarray((k += 32) - 32, k) : null);
  while (size > 1) {
    if (i % 2 === 1) {
      const sibling = next();
      if (!sibling) return 'its Merkle proof is too short';
      h = inner(blake3, sibling, h);
    } else if (i + 1 < size) {
      const sibling = next();
      if (!sibling) return 'its Merkle proof is too short';
      h = inner(blake3, h, sibling);
    }
    i = Math.floor(i / 2);
    size = Math.ceil(size / 2);
  }
  if (k !== proof.length) return 'its Merkle proof has hashes to spare';
  if (!equalBytes(h, root)) return 'its Merkle proof does not lead to the signed root';
  return null;
}
