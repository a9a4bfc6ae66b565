import { cleanup, fireEvent, render, screen, waitFor } from '@testing-library/svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import Authorize from './Authorize.svelte';
import { IpcError } from '../lib/errors';
import { authorizeRequestId } from '../lib/route';
import type { AppStatus, AuthorizationRequestView } from '../lib/types';

vi.mock('@tauri-apps/api/core', () => ({ invoke: vi.fn(), Channel: class {} }));

const ID = 'Rq_1-abc';
const back = (query: string) => ({ redirect_to: `http://127.0.0.1:9999/cb?${query}&state=s1&iss=http%3A%2F%2Flocalhost` });

function request(over: Partial<AuthorizationRequestView> = {}): AuthorizationRequestView {
  return {
    request_id: ID, client_id: 'notes', client_name: 'Notes', redirect_origin: 'http://127.0.0.1:9999',
    scopes: [
      { name: 'openid', description: 'Sign you in with your Keyward account' },
      { name: 'profile', description: 'See your name' },
    ],
    signed_in: true, needs_fresh_sign_in: false, already_consented: false,
    expires_at: new Date(Date.now() + 600_000).toISOString(), ...over,
  };
}

const signedInStatus = {
  account: { id: 'a', username: 'ada', display_name: 'Ada Lovelace', created_at: 0, state: 'active', recovery: null },
} as unknown as AppStatus;

/** A fake host that records the order of the calls the screen makes. */
function fakeApi(views: AuthorizationRequestView[] | Error) {
  const calls: string[] = [];
  let seen = 0;
  const client = {
    authorizationRequest: vi.fn(async (id: string) => {
      calls.push(`view ${id}`);
      if (views instanceof Error) throw views;
      return views[Math.min(seen++, views.length - 1)];
    }),
    approveAuthorization: vi.fn(async () => { calls.push('approve'); return back('code=c0de'); }),
    denyAuthorization: vi.fn(async () => { calls.push('deny'); return back('error=access_denied'); }),
    stepUp: vi.fn(async () => { calls.push('step-up'); }),
    signIn: vi.fn(async () => { calls.push('sign-in'); return signedInStatus.account!; }),
    status: vi.fn(async () => signedInStatus),
  };
  const navigate = vi.fn((url: string) => { calls.push(`go ${url}`); });
  return { client, navigate, calls };
}

afterEach(cleanup);

const phase = () => screen.getByTestId('authorize').dataset.phase;

describe('Authorize', () => {
  it('offers the passkey sign-in when not signed in, then asks for consent', async () => {
    const { client, navigate, calls } = fakeApi([request({ signed_in: false }), request()]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('sign-in'));
    expect(screen.getByTestId('authorize-title').textContent).toBe('Sign in to continue to Notes');
    expect(screen.queryByTestId('allow')).toBeNull();
    await fireEvent.input(screen.getByTestId('username'), { target: { value: ' ada ' } });
    await fireEvent.click(screen.getByTestId('sign-in'));
    await waitFor(() => expect(phase()).toBe('consent'));
    expect(client.signIn).toHaveBeenCalledWith('ada');
    expect(calls).toEqual([`view ${ID}`, 'sign-in', `view ${ID}`]);
    expect(screen.getByTestId('signed-in-as').textContent).toContain('Ada Lovelace');
    expect(navigate).not.toHaveBeenCalled();
  });

  it('shows the app, where it sends you, each scope in words, and that the choice is remembered', async () => {
    const { client, navigate, calls } = fakeApi([request()]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('consent'));
    const title = screen.getByTestId('authorize-title');
    expect(title.tagName).toBe('H1');
    expect(title.textContent).toBe('Allow Notes to sign you in?');
    await waitFor(() => expect(document.activeElement).toBe(title));
    expect(screen.getByTestId('redirect-origin').textContent).toBe('http://127.0.0.1:9999');
    expect(screen.getAllByTestId('scope').map((li) => li.textContent?.replace(/\s+/g, ' ').trim()))
      .toEqual(['Sign you in with your Keyward account openid', 'See your name profile']);
    expect(screen.getByTestId('remembered').textContent).toMatch(/remembers[\s\S]*revoke/);
    expect(screen.queryByTestId('fresh-sign-in')).toBeNull();
    const allow = screen.getByTestId('allow');
    expect(allow.tagName).toBe('BUTTON');
    expect(screen.getByTestId('deny').tagName).toBe('BUTTON');
    await fireEvent.click(allow);
    await waitFor(() => expect(navigate).toHaveBeenCalledWith(back('code=c0de').redirect_to));
    expect(calls).toEqual([`view ${ID}`, 'approve', `go ${back('code=c0de').redirect_to}`]);
    expect(client.stepUp).not.toHaveBeenCalled();
  });

  it('runs the step-up before approving when the app asks for a fresh sign-in', async () => {
    const { client, navigate, calls } = fakeApi([request({ needs_fresh_sign_in: true })]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('consent'));
    expect(screen.getByTestId('fresh-sign-in').textContent).toMatch(/confirm\s+with your key again/);
    await fireEvent.click(screen.getByTestId('allow'));
    await waitFor(() => expect(navigate).toHaveBeenCalled());
    expect(calls).toEqual([`view ${ID}`, 'step-up', 'approve', `go ${back('code=c0de').redirect_to}`]);
  });

  it('a step-up the key refuses approves nothing and says why', async () => {
    const { client, navigate } = fakeApi([request({ needs_fresh_sign_in: true })]);
    client.stepUp.mockRejectedValueOnce(new IpcError('key_cancelled', 'The security key did not answer.'));
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('consent'));
    await fireEvent.click(screen.getByTestId('allow'));
    await waitFor(() => expect(screen.getByTestId('error').textContent).toBe('The security key did not answer.'));
    expect(client.approveAuthorization).not.toHaveBeenCalled();
    expect(navigate).not.toHaveBeenCalled();
    expect(phase()).toBe('consent');
    expect((screen.getByTestId('allow') as HTMLButtonElement).disabled).toBe(false);
  });

  it('approves at once, showing no buttons, when the app was allowed before', async () => {
    const { client, navigate, calls } = fakeApi([request({ already_consented: true })]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(navigate).toHaveBeenCalledWith(back('code=c0de').redirect_to));
    expect(calls).toEqual([`view ${ID}`, 'approve', `go ${back('code=c0de').redirect_to}`]);
    expect(phase()).toBe('leaving');
    expect(screen.queryByTestId('allow')).toBeNull();
    expect(screen.queryByTestId('deny')).toBeNull();
  });

  it('allowed before but a fresh sign-in asked: one button, the step-up, then the approval', async () => {
    const { client, navigate, calls } = fakeApi([request({ already_consented: true, needs_fresh_sign_in: true })]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('confirm'));
    expect(screen.queryByTestId('allow')).toBeNull();
    expect(client.approveAuthorization).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByTestId('confirm'));
    await waitFor(() => expect(navigate).toHaveBeenCalled());
    expect(calls).toEqual([`view ${ID}`, 'step-up', 'approve', `go ${back('code=c0de').redirect_to}`]);
  });

  it('deny sends the browser to the app with the error keywardd gives', async () => {
    const { client, navigate, calls } = fakeApi([request()]);
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('consent'));
    await fireEvent.click(screen.getByTestId('deny'));
    await waitFor(() => expect(navigate).toHaveBeenCalledWith(back('error=access_denied').redirect_to));
    expect(calls).toEqual([`view ${ID}`, 'deny', `go ${back('error=access_denied').redirect_to}`]);
    expect(client.approveAuthorization).not.toHaveBeenCalled();
  });

  it('an expired or unknown request says so and leads back to the dashboard', async () => {
    const { client, navigate } = fakeApi(new IpcError('not_found', 'No such request.'));
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('missing'));
    expect(screen.getByTestId('authorize-title').textContent).toBe('This sign-in request is no longer valid');
    expect(screen.getByTestId('request-missing').textContent).toMatch(/expired/);
    expect(screen.getByTestId('to-dashboard').getAttribute('href')).toBe('#/');
    expect(navigate).not.toHaveBeenCalled();
  });

  it('a request that expires while the consent screen is open says so on Allow', async () => {
    const { client, navigate } = fakeApi([request()]);
    client.approveAuthorization.mockRejectedValueOnce(new IpcError('not_found', 'No such request.'));
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('consent'));
    await fireEvent.click(screen.getByTestId('allow'));
    await waitFor(() => expect(phase()).toBe('missing'));
    expect(navigate).not.toHaveBeenCalled();
  });

  it('an ID that cannot be a request is not even asked about', async () => {
    const { client, navigate } = fakeApi([request()]);
    render(Authorize, { props: { requestId: '../../sessions/end-others', client, navigate } });
    await waitFor(() => expect(phase()).toBe('missing'));
    expect(client.authorizationRequest).not.toHaveBeenCalled();
  });

  it('other errors are shown in words, with a way to try again', async () => {
    const { client, navigate } = fakeApi([request()]);
    client.authorizationRequest.mockRejectedValueOnce(new IpcError('network', 'Keyward cannot reach its server.'));
    render(Authorize, { props: { requestId: ID, client, navigate } });
    await waitFor(() => expect(phase()).toBe('failed'));
    expect(screen.getByTestId('error').textContent).toBe('Keyward cannot reach its server.');
    expect(screen.getByTestId('error').getAttribute('role')).toBe('alert');
    await fireEvent.click(screen.getByTestId('retry'));
    await waitFor(() => expect(phase()).toBe('consent'));
  });
});

describe('the authorize route', () => {
  it('reads the request ID from the hash and nothing else', () => {
    expect(authorizeRequestId('#/authorize/abc_DEF-1')).toBe('abc_DEF-1');
    expect(authorizeRequestId('#/authorize/a%2Fb')).toBe('a/b');
    expect(authorizeRequestId('#/authorize/%E0%A4%A')).toBe('');
    expect(authorizeRequestId('#/authorize/a/b')).toBeNull();
    expect(authorizeRequestId('#/')).toBeNull();
    expect(authorizeRequestId('')).toBeNull();
  });
});

describe('in the desktop app', () => {
  it('the authorization calls answer that they are not available there, and call nothing', async () => {
    const { invoke } = await import('@tauri-apps/api/core');
    const { tauriApi } = await import('../lib/tauri');
    for (const call of [
      () => tauriApi.authorizationRequest(ID), () => tauriApi.approveAuthorization(ID),
      () => tauriApi.denyAuthorization(ID), () => tauriApi.stepUp(),
    ]) {
      await expect(call()).rejects.toMatchObject({ code: 'web_only', message: expect.stringMatching(/not available in the app/) });
    }
    expect(invoke).not.toHaveBeenCalled();
  });
});
