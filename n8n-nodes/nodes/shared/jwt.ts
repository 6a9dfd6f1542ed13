import { createHmac, randomBytes, timingSafeEqual } from 'crypto';
import type { ICredentialDataDecryptedObject } from 'n8n-workflow';

export interface TokenOptions {
	audience: string;
	issuer: string;
	scopes: string[];
	/** The bridge's `workflows` claim: the workflow ids the token reaches (none: every one). */
	workflows?: string[];
	ttlSeconds?: number;
	now?: number;
}

function base64url(value: string | Buffer): string {
	return Buffer.from(value).toString('base64url');
}

function hmac(secret: string, signed: string): Buffer {
	return createHmac('sha256', secret).update(signed).digest();
}

/** A short-lived HS256 JWT for the bridge, signed with Node's crypto (no dependency). */
export function mintToken(secret: string, options: TokenOptions): string {
	const now = Math.floor((options.now ?? Date.now()) / 1000);
	const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
	const claims: Record<string, unknown> = {
		iss: options.issuer,
		aud: options.audience,
		iat: now,
		exp: now + (options.ttlSeconds ?? 300),
		jti: randomBytes(8).toString('hex'),
		scope: options.scopes.join(' '),
	};
	if (options.workflows !== undefined) claims.workflows = options.workflows;
	const payload = base64url(JSON.stringify(claims));
	return `${header}.${payload}.${hmac(secret, `${header}.${payload}`).toString('base64url')}`;
}

/** Whether `token` carries a signature made with `secret` (a token the node minted itself). */
export function signedWith(secret: string, token: string): boolean {
	const parts = token.split('.');
	if (parts.length !== 3) return false;
	const given = Buffer.from(parts[2], 'base64url');
	const expected = hmac(secret, `${parts[0]}.${parts[1]}`);
	return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The scopes a request needs, by its path: subscriptions need admin, the rest execute + status. */
export function scopesFor(url: string | undefined): string[] {
	return (url ?? '').includes('/api/v1/subscriptions') ? ['admin'] : ['execute', 'status'];
}

/**
 * The token a request to `url` sends with a JWT-secret credential, limited to `workflows`: the
 * workflow the node runs in, or none when the request does not come from a node's own code.
 */
export function tokenFor(
	credentials: ICredentialDataDecryptedObject,
	url: string | undefined,
	workflows: string[],
): string {
	return mintToken(credentials.jwtSecret as string, {
		audience: (credentials.audience as string) || 'n8n-bridge',
		issuer: (credentials.issuer as string) || 'n8n-bridge',
		scopes: scopesFor(url),
		workflows,
	});
}
