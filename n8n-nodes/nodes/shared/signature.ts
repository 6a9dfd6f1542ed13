import { createHmac, timingSafeEqual } from 'crypto';

import type { IExecuteFunctions, IRunExecutionData, IWebhookFunctions } from 'n8n-workflow';

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
	const key = Buffer.from(secret.trim().replace(/^whsec_/, ''), 'base64');
	const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${content}`).digest();
	for (const entry of signatures.split(' ')) {
		const [version, value] = entry.split(',', 2);
		if (version !== 'v1' || !value) continue;
		const given = Buffer.from(value, 'base64');
		if (given.length === expected.length && timingSafeEqual(given, expected)) return undefined;
	}
	return 'the webhook signature does not match BRIDGE_CALLBACK_SECRET';
}

/** The bridge refuses a BRIDGE_CALLBACK_SECRET of fewer bytes: a shorter one is a mistake. */
export const MIN_SECRET_BYTES = 24;

/** The key of the credential's Callback Secret; undefined when none is set. Throws when it is
 * set but too short to be the bridge's (e.g. `whsec_` alone would sign with an empty key). */
export function callbackKey(secret: unknown): Buffer | undefined {
	const text = typeof secret === 'string' ? secret.trim() : '';
	if (!text) return undefined;
	const key = Buffer.from(text.replace(/^whsec_/, ''), 'base64');
	if (key.length < MIN_SECRET_BYTES) {
		throw new Error(
			`the credential’s Callback Secret is too short (${key.length} of at least ${MIN_SECRET_BYTES} bytes): set it to the bridge’s BRIDGE_CALLBACK_SECRET`,
		);
	}
	return key;
}

/** The query parameter that ties a resume URL to its execution and node. */
export const RESUME_TAG = 'bridge_resume';

/** What a resume tag binds: the n8n instance, the workflow, the execution, the waiting node and
 * its run (a node in a loop waits once a round, at the same resume URL). */
export interface ResumePlace {
	instanceId: string;
	workflowId: string;
	executionId: string;
	node: string;
	run: number;
}

/** Where the node running in `context` waits, in its run `run`. */
export function resumePlace(
	context: IExecuteFunctions | IWebhookFunctions,
	run: number,
): ResumePlace {
	return {
		instanceId: context.getInstanceId(),
		workflowId: String(context.getWorkflow().id ?? ''),
		executionId: String(context.getExecutionId()),
		node: context.getNode().name,
		run,
	};
}

/** The run of this node that waits, at resume: n8n gives the resume webhook no run index of its
 * own, but the execution's data it gets holds the node's runs before this one (n8n takes the
 * waiting run out of it first; 2.x may leave a placeholder without a status in its place). */
export function waitingRun(context: IWebhookFunctions): number {
	const data = (context as unknown as { runExecutionData?: IRunExecutionData }).runExecutionData;
	const runs = data?.resultData?.runData?.[context.getNode().name] ?? [];
	return runs.filter((run) => run.executionStatus !== undefined).length;
}

/** A tag only the holder of the Callback Secret can make, for one run of one waiting node of one
 * execution of one workflow in one n8n: a callback the bridge signed for another job, another
 * round of a loop, or another execution (here or in another n8n), does not carry it. */
export function resumeTag(key: Buffer, place: ResumePlace): string {
	const { instanceId, workflowId, executionId, node, run } = place;
	return createHmac('sha256', key)
		.update(['n8n-bridge resume', instanceId, workflowId, executionId, node, run].join('\n'))
		.digest('base64url');
}

/** The resume URL the bridge is given: n8n's, with this execution's tag added. */
export function taggedResumeUrl(resumeUrl: string, tag: string): string {
	const url = new URL(resumeUrl);
	url.searchParams.set(RESUME_TAG, tag);
	return url.toString();
}

function tagOf(url: unknown): string {
	try {
		return new URL(String(url)).searchParams.get(RESUME_TAG) ?? '';
	} catch {
		return '';
	}
}

function sameText(given: string, expected: string): boolean {
	const a = Buffer.from(given);
	const b = Buffer.from(expected);
	return a.length === b.length && timingSafeEqual(a, b);
}

function refuse(context: IWebhookFunctions, message: string): true {
	context.getResponseObject().status(401).json({ message });
	return true;
}

/**
 * With a Callback Secret in the credentials, answer 401 to a request whose signature is missing or
 * wrong — and, for a resume call (`tagged`), to one whose URL lacks this execution's tag. True when
 * it was refused (nothing else must happen then).
 */
export async function refusedUnsigned(
	context: IWebhookFunctions,
	tagged = false,
): Promise<boolean> {
	const credentials = await context.getCredentials(CREDENTIALS);
	let key: Buffer | undefined;
	try {
		key = callbackKey(credentials.callbackSecret);
	} catch (error) {
		return refuse(context, (error as Error).message);
	}
	if (!key) return false;
	const request = context.getRequestObject();
	const raw = (request as { rawBody?: Buffer }).rawBody?.toString() ?? JSON.stringify(request.body);
	const reason = verifySignature(credentials.callbackSecret as string, request.headers, raw);
	if (reason) return refuse(context, reason);
	if (!tagged) return false;
	const place = resumePlace(context, waitingRun(context));
	const expected = resumeTag(key, place);
	const query = context.getQueryData() as Record<string, unknown>;
	if (!sameText(String(query[RESUME_TAG] ?? ''), expected)) {
		return refuse(
			context,
			'this callback is not for this execution (its resume URL is not this one)',
		);
	}
	// The bridge signed the URL it was given with the rest: a callback meant for another URL (an
	// earlier round's, another n8n's) sent to this one is not this one's; nor is a job of another
	// workflow or execution that names this URL.
	const body = request.body as
		| { workflow_id?: unknown; execution_id?: unknown; callback_url?: unknown }
		| undefined;
	if (!sameText(tagOf(body?.callback_url), expected)) {
		return refuse(context, 'this callback was meant for another resume URL');
	}
	if (body?.workflow_id !== place.workflowId || body?.execution_id !== place.executionId) {
		return refuse(context, 'this callback is for a job of another workflow or execution');
	}
	return false;
}
