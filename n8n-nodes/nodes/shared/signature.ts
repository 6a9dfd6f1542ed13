import { createHmac, timingSafeEqual } from 'crypto';

import type { IWebhookFunctions } from 'n8n-workflow';

import { CREDENTIALS } from './transport';

export const TOLERANCE_SECONDS = 5 * 60;

/**
 * Checks Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) against
 * the signed content: `{id}.{timestamp}.{content}` under HMAC-SHA256 with the whsec_ key.
 * Returns why it is not valid, or undefined when it is.
 */
export function verifySignature(
	secret: string,
	headers: Record<string, string | string[] | undefined>,
	content: string,
	now: number = Date.now(),
): string | undefined {
	const header = (name: string) => {
		const value = headers[name] ?? headers[name.toLowerCase()];
		return Array.isArray(value) ? value[0] : value;
	};
	const id = header('webhook-id');
	const timestamp = header('webhook-timestamp');
	const signatures = header('webhook-signature');
	if (!id || !timestamp || !signatures) {
		return 'the request is not signed (webhook-id, webhook-timestamp, webhook-signature)';
	}
	const seconds = Number(timestamp);
	if (!Number.isFinite(seconds) || Math.abs(now / 1000 - seconds) > TOLERANCE_SECONDS) {
		return 'webhook-timestamp is missing or more than 5 minutes off';
	}
	const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
	const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${content}`).digest();
	for (const entry of signatures.split(' ')) {
		const [version, value] = entry.split(',', 2);
		if (version !== 'v1' || !value) continue;
		const given = Buffer.from(value, 'base64');
		if (given.length === expected.length && timingSafeEqual(given, expected)) return undefined;
	}
	return 'the webhook signature does not match BRIDGE_CALLBACK_SECRET';
}

/**
 * With a Callback Secret in the credentials, answer 401 to a request whose signature is missing or
 * wrong. True when it was refused (nothing else must happen then).
 */
export async function refusedUnsigned(context: IWebhookFunctions): Promise<boolean> {
	const credentials = await context.getCredentials(CREDENTIALS);
	const secret = credentials.callbackSecret as string | undefined;
	if (!secret) return false;
	const request = context.getRequestObject();
	const raw = (request as { rawBody?: Buffer }).rawBody?.toString() ?? JSON.stringify(request.body);
	const reason = verifySignature(secret, request.headers, raw);
	if (!reason) return false;
	context.getResponseObject().status(401).json({ message: reason });
	return true;
}
