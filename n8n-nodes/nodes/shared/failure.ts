import type { IDataObject, INode, INodeExecutionData } from 'n8n-workflow';
import { NodeApiError, NodeOperationError } from 'n8n-workflow';

/**
 * What went wrong, as the bridge said it: the content of an error item, and of the error that
 * stops the workflow.
 */
export interface Failure extends IDataObject {
	/** The whole message (for a background job: which job, how it ended, and why). */
	message: string;
	/** The bridge's error code (`processor_error`, `validation`, `timeout`, …). */
	code: string;
	/** The input item that failed (its index in this node's input). */
	item?: number;
	/** The bridge job the item ran in. */
	job_id?: string;
	/** A background job's end: failed or cancelled. */
	status?: string;
	/** The HTTP status the bridge answered a refused request with. */
	http_code?: number;
	/** The bridge's trace id: its log lines about this carry it. */
	trace_id?: string;
	description?: string;
}

/** What the bridge said for each failed call: read back when the call's items become error items. */
const failures = new WeakMap<NodeApiError, Failure>();

/** A failed call to the bridge: n8n's API error, with what the bridge said. */
export function apiError(
	node: INode,
	failure: Failure,
	errorResponse: IDataObject,
	itemIndex?: number,
): NodeApiError {
	const error = new NodeApiError(node, errorResponse as never, {
		message: failure.message,
		description: describeFailure(failure),
		httpCode: failure.http_code ? String(failure.http_code) : undefined,
		itemIndex,
	});
	failures.set(error, failure);
	return error;
}

/** "the bridge's description · Code: … · Item: … · Job ID: … · Trace ID: …" */
export function describeFailure(failure: Failure): string {
	return [
		failure.description,
		`Code: ${failure.code}`,
		failure.item === undefined ? undefined : `Item: ${failure.item}`,
		failure.job_id ? `Job ID: ${failure.job_id}` : undefined,
		failure.trace_id ? `Trace ID: ${failure.trace_id}` : undefined,
	]
		.filter(Boolean)
		.join(' · ');
}

/** The error that stops the workflow for a failed item or job (the call itself went well). */
export function failureError(node: INode, failure: Failure): NodeOperationError {
	return new NodeOperationError(node, failure.message, {
		description: describeFailure(failure),
		itemIndex: failure.item,
	});
}

/** What a caught error says, as a Failure. */
export function failureOf(error: unknown): Failure {
	const known = error instanceof NodeApiError ? failures.get(error) : undefined;
	if (known) return known;
	const description = (error as { description?: string | null }).description ?? undefined;
	return { message: (error as Error).message, code: 'node_error', description };
}

/**
 * An error item: `{ message, error: Failure }` paired with input `item`. n8n 1.x and 2.x keep
 * exactly this shape whole and route it to the node's error output (*On Error: Continue (using
 * error output)*); an item carrying `.error` would be cut to `{ error: message }`.
 */
export function errorItem(failure: Failure, item: number): INodeExecutionData {
	const error: Failure = { ...failure, item };
	return { json: { message: failure.message, error }, pairedItem: { item } };
}
