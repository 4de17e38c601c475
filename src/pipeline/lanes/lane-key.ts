/**
 * Which lane a record runs on: a hash of its key, so one key's records always share a lane (and
 * stay in offset order there) while different keys spread over the lanes.
 */
import type { ConsumedRecord } from '../../kafka/runner.js';

import type { MessageInfo } from '../handler.js';
import { toMessageInfo } from '../record/decode.js';
import type { ResolvedLanes } from './options.js';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** 32-bit FNV-1a of the bytes: cheap, stable across processes and versions, well spread. */
export function fnv1a(bytes: Uint8Array): number {
  let hash = FNV_OFFSET;
  for (let i = 0; i < bytes.length; i++) {
    hash ^= bytes[i] ?? 0;
    hash = Math.imul(hash, FNV_PRIME);
  }
  return hash >>> 0;
}

const NO_KEY = new Uint8Array(0);

/**
 * The lane of each record. Records without a key (and those whose key function threw) share the
 * lane of the empty key: no order is known between them, so they keep the one they arrived in.
 */
export class LaneAssigner {
  readonly #lanes: ResolvedLanes;
  readonly #onKeyError: (error: unknown, record: ConsumedRecord) => void;

  constructor(lanes: ResolvedLanes, onKeyError: (error: unknown, record: ConsumedRecord) => void) {
    this.#lanes = lanes;
    this.#onKeyError = onKeyError;
  }

  laneOf(record: ConsumedRecord): number {
    return fnv1a(this.#keyBytes(record)) % this.#lanes.count;
  }

  #keyBytes(record: ConsumedRecord): Uint8Array {
    const keyOf = this.#lanes.key;
    if (keyOf === undefined) return record.key ?? NO_KEY;
    let key: ReturnType<typeof keyOf>;
    try {
      const info: MessageInfo = toMessageInfo(record);
      key = keyOf(info);
    } catch (error) {
      this.#onKeyError(error, record);
      return NO_KEY;
    }
    if (key === null || key === undefined) return NO_KEY;
    return typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  }
}
