import { pino } from 'pino';
import { describe, expect, it } from 'vitest';

import { EventHub } from '../../../src/events/index.js';

const crash = { groupId: 'g', error: new Error('x'), restart: true };

describe('EventHub', () => {
  it('builds a payload only when someone listens', () => {
    const hub = new EventHub(pino({ level: 'silent' }));
    let built = 0;
    hub.emit('consumer:crash', () => {
      built += 1;
      return crash;
    });
    expect(built).toBe(0);
    const off = hub.on('consumer:crash', () => undefined);
    hub.emit('consumer:crash', () => {
      built += 1;
      return crash;
    });
    expect(built).toBe(1);
    off();
    hub.emit('consumer:crash', () => {
      built += 1;
      return crash;
    });
    expect(built).toBe(1);
  });

  it('logs a listener that throws or rejects and still calls the others', async () => {
    const lines: string[] = [];
    const hub = new EventHub(pino({ level: 'error' }, { write: (line: string) => void lines.push(line) }));
    const seen: string[] = [];
    hub.on('consumer:crash', () => {
      throw new Error('sync listener bug');
    });
    hub.on('consumer:crash', () => Promise.reject(new Error('async listener bug')));
    hub.on('consumer:crash', (e) => void seen.push(e.groupId));
    expect(() => hub.emit('consumer:crash', () => crash)).not.toThrow();
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual(['g']);
    expect(lines.join('')).toContain('sync listener bug');
    expect(lines.join('')).toContain('async listener bug');
  });

  it('says whether an event has listeners, and hands a built payload to them all', () => {
    const hub = new EventHub(pino({ level: 'silent' }));
    expect(hub.listening('consumer:crash')).toBe(false);
    const seen: unknown[] = [];
    const off = hub.on('consumer:crash', (e) => void seen.push(e));
    hub.on('consumer:crash', () => {
      throw new Error('a listener bug does not stop the others');
    });
    expect(hub.listening('consumer:crash')).toBe(true);
    expect(hub.listening('partition:resumed')).toBe(false);
    hub.emitBuilt('consumer:crash', crash);
    expect(seen).toEqual([crash]);
    off();
    hub.emitBuilt('consumer:crash', crash);
    expect(seen).toHaveLength(1);
  });
});
