// The wire types are generated from the Rust ones into ./wire.ts (tests/wire_types.rs fails
// when it is stale); the UI imports them from here. Times are Unix milliseconds.
export type * from './wire';

export type Millis = number;

/** An error from the backend: a server `ErrorCode`, or one of the desktop app's own codes. */
export interface AppError {
  code: string;
  message: string;
}
