import type pg from 'pg';
import { describe, expect, it } from 'vitest';

import { OncelyError } from '../../../src/errors.js';
import { classifyFailure } from '../../../src/pipeline/retry.js';
import { createStepRunner, stepIdempotencyKey, compensationIdempotencyKey } from '../../../src/steps/runner.js';

// Never queried: every check below fails before the runner touches the database.
const pool = {} as pg.Pool;

describe('steps', () => {
  it('pins the idempotency key format: keys already sent to providers must never change', () => {
    // A digest of the identity (DESIGN.md §3a) behind a readable prefix; computed independently
    // here as SHA-256 (base64url) of the documented encoding.
    expect(stepIdempotencyKey('ledger', 'pay-1', 'charge')).toBe(
      'oncely-step.charge~wCdMYLvWa-I-yXfqsctXxbmCBTzaYz-Qb6RaSKrBTFo',
    );
    expect(compensationIdempotencyKey('tenant-9', 'key 1', 'charge')).toBe(
      'oncely-compensation.charge~N1fkKoPqem2iLpxishg4_NrHpRICYrm86C3sCfW9fwg',
    );
    expect(stepIdempotencyKey('acme', 'k1', 'charge', 3)).toBe(
      'oncely-step.charge~bnKJCsIWg2dtTs93Bvq7XYCXtwqzRifd4IBiRLGKXq4',
    );
    expect(stepIdempotencyKey('acme:eu', 'k1', 'charge')).not.toBe(stepIdempotencyKey('acme', 'eu:k1', 'charge'));
  });

  it('gives every generation of an owner its own keys, and refuses a generation that is not a whole number ≥ 1', () => {
    expect(stepIdempotencyKey('acme', 'k1', 'charge', 1)).not.toBe(stepIdempotencyKey('acme', 'k1', 'charge', 2));
    expect(stepIdempotencyKey('acme', 'k1', 'charge', 1)).not.toBe(stepIdempotencyKey('acme', 'k1', 'charge'));
    expect(createStepRunner({ pool, scope: 'acme', ownerId: 'k1', generation: 4n }).generation).toBe(4n);
    for (const generation of [0, -1, 1.5, 0n]) {
      expect(() => createStepRunner({ pool, scope: 'acme', ownerId: 'k1', generation })).toThrow(
        expect.objectContaining({ code: 'ONCELY_CONFIG' }),
      );
    }
  });

  it('refuses an empty name and the compensate: prefix with ONCELY_CONFIG, before any call', async () => {
    const runner = createStepRunner({ pool, scope: 'g', ownerId: 'm' });
    await expect(runner.step('', () => 1)).rejects.toMatchObject({ code: 'ONCELY_CONFIG' });
    await expect(runner.step('charge\ud800', () => 1)).rejects.toMatchObject({ code: 'ONCELY_CONFIG' });
    await expect(runner.step('compensate:charge', () => 1)).rejects.toMatchObject({ code: 'ONCELY_CONFIG' });
    expect(() => createStepRunner({ pool, scope: '', ownerId: 'm' })).toThrow(/scope/);
    expect(() => createStepRunner({ pool, scope: 'g', ownerId: '' })).toThrow(/ownerId/);
  });

  it('does not retry an ONCELY_CONFIG error thrown inside a handler (a repeated step name)', () => {
    const error = new OncelyError('ONCELY_CONFIG', 'step "charge" was called twice');
    expect(classifyFailure({ error, inHandler: true, connectionLost: false })).toBe('non_retriable');
  });
});
