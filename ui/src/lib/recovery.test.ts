import { describe, expect, it } from 'vitest';
import { parse, publicKey, RecoveryKeyFormatError, sign, toDisplay } from './recovery';

// The known answer of keyward-core's recovery_key.rs: a browser must make the same key pair
// and the same proof as the desktop app and the CLI.
const RANDOM = new Uint8Array(16).fill(7);
const DISPLAY = '0W3G-E1R7-0W3G-E1R7-0W3G-E1R7-0XRG-PRKT';

describe('recovery key in the browser', () => {
  it('writes, reads, derives and signs exactly as the Rust side does', async () => {
    expect(await toDisplay(RANDOM)).toBe(DISPLAY);
    expect(await parse(DISPLAY.toLowerCase().replace(/0/g, 'o'))).toEqual(RANDOM);
    expect(await publicKey(RANDOM)).toBe('kWb0JURynwmhbp9mChqmwPwFfPPBz7HoLyZmlVGFSNo');
    expect(await sign(RANDOM, 'drill', 'localhost', new Uint8Array(32).fill(1))).toBe(
      'leaZpHEWNiGebO0w7V2P31AriC0wBLWAlciJjEnctv4HvlzipdtooisaGZgNVhqLFkoZiz7pgnwfzg9PLwjMDQ');
  });

  it('catches a typo, a wrong length and a foreign character before the server sees them', async () => {
    const typo = DISPLAY.slice(0, -1) + (DISPLAY.endsWith('T') ? 'V' : 'T');
    await expect(parse(typo)).rejects.toThrow(/typo/);
    await expect(parse(DISPLAY.slice(0, 10))).rejects.toThrow(/32 characters/);
    await expect(parse(DISPLAY.replace('W', 'U'))).rejects.toBeInstanceOf(RecoveryKeyFormatError);
  });
});
