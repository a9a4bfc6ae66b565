import type { AppError } from './types';

/** An error from the host: a server `ErrorCode`, or one of the app's own codes. */
export class IpcError extends Error implements AppError {
  constructor(public code: string, message: string) {
    super(message);
  }
}
