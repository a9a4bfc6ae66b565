import { describe, expect, it } from 'vitest';
import { keyPromptText } from './format';

describe('keyPromptText', () => {
  it('asks for the PIN with the tries left, and says when the last one was wrong', () => {
    expect(keyPromptText({ kind: 'pin', retries: 8, wrong: false })).toEqual({
      title: 'Enter your security key PIN', detail: '8 tries left.',
    });
    expect(keyPromptText({ kind: 'pin', retries: 1, wrong: true })).toEqual({
      title: 'Wrong PIN. Enter your security key PIN again', detail: '1 try left before the key locks.',
    });
  });

  it('tells USB and NFC users alike what to do', () => {
    expect(keyPromptText({ kind: 'insert_or_tap' }).title).toMatch(/Insert .* or hold it to the reader/);
    expect(keyPromptText({ kind: 'touch' }).title).toBe('Touch your security key');
  });
});
