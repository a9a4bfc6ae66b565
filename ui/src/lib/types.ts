// Wire types, mirroring crates/keyward-proto (Rust is the source of truth) and the desktop's
// own views in src-tauri/desktop.rs. Times are Unix milliseconds.

export type Millis = number;

export interface AppError { code: string; message: string }

export type AccountState = 'active' | 'recovery_pending' | 'recovery_enrolment';

export interface RecoveryWindow { started_at: Millis; ends_at: Millis; device_name: string; address: string }

export interface AccountView {
  id: string;
  username: string;
  display_name: string;
  created_at: Millis;
  state: AccountState;
  recovery: RecoveryWindow | null;
}

export interface AppStatus {
  server: string | null;
  embedded: boolean;
  rp_id: string | null;
  account: AccountView | null;
  session_id: string | null;
  key_label: string;
  virtual_keys: number;
  /** Dropped after sitting idle past the server's timeout: a touch of the key unlocks. */
  locked: boolean;
  /** This machine redeemed the recovery key and holds the recovery session. */
  recovering: boolean;
}

export interface DeviceView {
  id: string;
  name: string;
  platform: string;
  first_seen_at: Millis;
  last_seen_at: Millis;
  address: string;
  place: string | null;
}

export interface SessionView {
  id: string;
  device: DeviceView;
  scope: 'full' | 'recovery';
  created_at: Millis;
  last_seen_at: Millis;
  idle_expires_at: Millis;
  expires_at: Millis;
  verified_at: Millis;
  opened_by: string | null;
  address: string;
  current: boolean;
}

export interface AuthenticatorView {
  id: string;
  nickname: string;
  aaguid: string | null;
  model: string | null;
  transports: string[];
  backup_eligible: boolean;
  backup_state: boolean;
  created_at: Millis;
  last_used_at: Millis | null;
  sign_count: number;
  status: 'active' | 'lost';
}

export interface RecoveryKeyStatus {
  present: boolean;
  created_at: Millis | null;
  confirmed_at: Millis | null;
  last_verified_at: Millis | null;
  drill_due: boolean;
}

export interface NextStep { code: string; message: string }

export interface Readiness {
  level: 'at_risk' | 'partial' | 'protected';
  active_authenticators: number;
  independent_authenticators: number;
  device_bound: number;
  synced: number;
  has_backup: boolean;
  recovery_key: RecoveryKeyStatus;
  stale_authenticators: string[];
  single_point_of_failure: string | null;
  next_step: NextStep | null;
}

export interface Overview {
  account: AccountView;
  readiness: Readiness;
  sessions: SessionView[];
  authenticators: AuthenticatorView[];
}

export interface RemovalImpact {
  authenticator: AuthenticatorView;
  sessions_ending: SessionView[];
  readiness_after: Readiness;
  refused: AppError | null;
}

export interface EndedSessions { ended: string[] }

export type EventKind =
  | 'account_created' | 'sign_in' | 'sign_in_failed' | 'session_ended'
  | 'authenticator_added' | 'authenticator_renamed' | 'authenticator_removed'
  | 'authenticator_reported_lost' | 'recovery_key_generated' | 'recovery_key_confirmed'
  | 'recovery_key_verified' | 'recovery_started' | 'recovery_cancelled'
  | 'recovery_completed' | 'cloned_key_warning';

export interface EventDetail {
  authenticator_id?: string;
  authenticator_name?: string;
  ended_session_id?: string;
  reason?: string;
  known_device?: boolean;
  ends_at?: Millis;
  place?: string;
}

export interface SecurityEvent {
  id: number;
  account_id: string;
  kind: EventKind;
  at: Millis;
  urgency: 'quiet' | 'urgent';
  session_id: string | null;
  device_id: string | null;
  device_name: string | null;
  address: string | null;
  detail: EventDetail;
  hash: string;
}

export interface EventPage { events: SecurityEvent[]; next_before: number | null }

export interface NewRecoveryKey { key: string; status: RecoveryKeyStatus }

export interface RecoveryStarted { token?: never; window: RecoveryWindow; account: AccountView }

/** What the live feed sends: an event, or "open this session" from a desktop notification. */
export type FeedMessage =
  | { type: 'event'; event: SecurityEvent }
  | { type: 'open'; session_id: string | null };
