import type {
	ICredentialDataDecryptedObject,
	IDataObject,
	IExecuteFunctions,
	IHookFunctions,
	IHttpRequestMethods,
	ILoadOptionsFunctions,
	INode,
	INodeExecutionData,
	IWebhookFunctions,
	NodeApiError,
} from 'n8n-workflow';

import type { Failure } from './failure';
import { apiError } from './failure';
import { tokenFor } from './jwt';

export const CREDENTIALS = 'pythonBridgeApi';

export type BridgeContext =
	| IExecuteFunctions
	| ILoadOptionsFunctions
	| IHookFunctions
	| IWebhookFunctions;

/** The bridge's shared error body. */
export interface BridgeErrorBody {
	code: string;
	message: string;
	description?: string | null;
	http_code: number;
	retryable: boolean;
	trace_id: string;
	details?: unknown;
}

export interface WireItem {
	json: IDataObject;
	binary?: Record<
		string,
		{ data: string; mimeType?: string; fileName?: string; fileExtension?: string }
	>;
	pairedItem?: { item: number };
}

export interface RequestOptions {
	itemIndex?: number;
	/** Statuses answered without throwing (e.g. 404 when asking whether something exists). */
	allow?: number[];
	timeoutMs?: number;
}

const credentialsRead = new WeakMap<BridgeContext, Promise<ICredentialDataDecryptedObject>>();

/**
 * The node's credentials, read once per run of the node (n8n makes a context for each run):
 * n8n reads them from its database and decrypts them at every call, twice per request if left
 * to itself, which cost Execute more than encoding its batches (see docs/benchmarks.md).
 */
export function credentialsOf(context: BridgeContext): Promise<ICredentialDataDecryptedObject> {
	let credentials = credentialsRead.get(context);
	if (credentials === undefined) {
		credentials = context.getCredentials(CREDENTIALS);
		credentialsRead.set(context, credentials);
	}
	return credentials;
}

/** The one way to call the bridge: authenticated by the credential, failures as NodeApiError. */
export async function bridgeRequest<T = IDataObject>(
	context: BridgeContext,
	method: IHttpRequestMethods,
	path: string,
	body?: IDataObject,
	options: RequestOptions = {},
): Promise<{ status: number; body: T }> {
	const credentials = await credentialsOf(context);
	const baseUrl = String(credentials.baseUrl).replace(/\/$/, '');
	const headers: IDataObject = {};
	if (credentials.authentication === 'jwtSecret') {
		// Limited to this workflow: the bridge shows it no other workflow's jobs or events.
		const workflowId = context.getWorkflow().id;
		headers.Authorization = `Bearer ${tokenFor(credentials, path, workflowId ? [workflowId] : [])}`;
	}
	let response: { statusCode: number; body: unknown };
	try {
		response = (await context.helpers.httpRequestWithAuthentication.call(
			context,
			CREDENTIALS,
			{
				method,
				url: `${baseUrl}${path}`,
				headers,
				body,
				json: true,
				returnFullResponse: true,
				ignoreHttpStatusErrors: true,
				timeout: options.timeoutMs ?? 300_000,
			},
			// The credentials read above: without them n8n reads them again for the request.
			{ credentialsDecrypted: { id: '', name: CREDENTIALS, type: CREDENTIALS, data: credentials } },
		)) as { statusCode: number; body: unknown };
	} catch (error) {
		const failure: Failure = {
			message: `The Python bridge at ${baseUrl} cannot be reached`,
			code: 'unreachable',
			description: (error as Error).message,
		};
		throw apiError(context.getNode(), failure, {}, options.itemIndex);
	}
	if (response.statusCode >= 400 && !(options.allow ?? []).includes(response.statusCode)) {
		throw bridgeError(context.getNode(), response.body, response.statusCode, options.itemIndex);
	}
	return { status: response.statusCode, body: response.body as T };
}

/** The bridge's error answer as an error: its message, code, description, HTTP code and trace id. */
export function bridgeError(
	node: INode,
	body: unknown,
	status: number,
	itemIndex?: number,
): NodeApiError {
	const error = (body as { error?: BridgeErrorBody } | undefined)?.error;
	const failure: Failure = {
		message: error?.message ?? `The Python bridge answered HTTP ${status}`,
		code: error?.code ?? `http_${status}`,
		http_code: error?.http_code ?? status,
	};
	if (error?.description) failure.description = error.description;
	const jobId = (error?.details as { job_id?: unknown } | undefined)?.job_id;
	if (typeof jobId === 'string') failure.job_id = jobId; // the job ran, then failed as a whole
	if (error?.trace_id) failure.trace_id = error.trace_id;
	return apiError(node, failure, (body ?? {}) as IDataObject, itemIndex);
}

/** n8n items as the bridge takes them: binary data read and base64-encoded. */
export async function toWire(
	context: IExecuteFunctions,
	items: INodeExecutionData[],
	offset: number,
): Promise<WireItem[]> {
	const wire: WireItem[] = new Array(items.length);
	for (let index = 0; index < items.length; index++) {
		const item = items[index];
		wire[index] = item.binary
			? { json: item.json, binary: await binaryToWire(context, item, offset + index) }
			: { json: item.json };
	}
	return wire;
}

async function binaryToWire(
	context: IExecuteFunctions,
	item: INodeExecutionData,
	itemIndex: number,
): Promise<NonNullable<WireItem['binary']>> {
	const binary: NonNullable<WireItem['binary']> = {};
	for (const [key, data] of Object.entries(item.binary ?? {})) {
		const buffer = await context.helpers.getBinaryDataBuffer(itemIndex, key);
		binary[key] = {
			data: buffer.toString('base64'),
			mimeType: data.mimeType,
			fileName: data.fileName,
			fileExtension: data.fileExtension,
		};
	}
	return binary;
}

/** Bridge output items as n8n items, each paired with input `offset + pairedItem.item`. */
export async function fromWire(
	context: IExecuteFunctions | IWebhookFunctions,
	wires: WireItem[],
	offset: number,
): Promise<INodeExecutionData[]> {
	const items: INodeExecutionData[] = new Array(wires.length);
	for (let index = 0; index < wires.length; index++) {
		const wire = wires[index];
		const item: INodeExecutionData = {
			json: wire.json,
			pairedItem: { item: offset + (wire.pairedItem?.item ?? 0) },
		};
		if (wire.binary) {
			item.binary = {};
			for (const [key, data] of Object.entries(wire.binary)) {
				item.binary[key] = await context.helpers.prepareBinaryData(
					Buffer.from(data.data, 'base64'),
					data.fileName,
					data.mimeType,
				);
			}
		}
		items[index] = item;
	}
	return items;
}
