import { createHmac, randomBytes } from 'crypto';

export interface TokenOptions {
	audience: string;
	issuer: string;
	scopes: string[];
	ttlSeconds?: number;
	now?: number;
}

function base64url(value: string | Buffer): string {
	return Buffer.from(value).toString('base64url');
}

/** A short-lived HS256 JWT for the bridge, signed with Node's crypto (no dependency). */
export function mintToken(secret: string, options: TokenOptions): string {
	const now = Math.floor((options.now ?? Date.now()) / 1000);
	const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
	const payload = base64url(
		JSON.stringify({
			iss: options.issuer,
			aud: options.audience,
			iat: now,
			exp: now + (options.ttlSeconds ?? 300),
			jti: randomBytes(8).toString('hex'),
			scope: options.scopes.join(' '),
		}),
	);
	const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
	return `${header}.${payload}.${signature}`;
}

/** The scopes a request needs, by its path: subscriptions need admin, the rest execute + status. */
export function scopesFor(url: string | undefined): string[] {
	return (url ?? '').includes('/api/v1/subscriptions') ? ['admin'] : ['execute', 'status'];
}
