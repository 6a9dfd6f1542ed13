import { createHash } from 'crypto';

import type {
	IDataObject,
	IExecuteFunctions,
	INode,
	INodeExecutionData,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeApiError, NodeOperationError } from 'n8n-workflow';

import type { Failure } from '../shared/failure';
import { errorItem, failureError, failureOf } from '../shared/failure';
import {
	callbackKey,
	refusedUnsigned,
	resumePlace,
	resumeTag,
	taggedResumeUrl,
} from '../shared/signature';
import type { WireItem } from '../shared/transport';
import { bridgeRequest, credentialsOf, fromWire, toWire } from '../shared/transport';
import { parametersFor } from './processors';

/** Waiting for a callback lasts the job's timeout plus this, for the callback's own retries. */
export const CALLBACK_GRACE_SECONDS = 15 * 60;
export const DEFAULT_WAIT_SECONDS = 3600;

interface ItemError {
	index: number;
	code: string;
	message: string;
}

interface ExecuteAnswer {
	job_id: string;
	status: string;
	items: WireItem[];
	errors: ItemError[];
	trace_id?: string;
}

interface Accepted {
	job_id: string;
	status: string;
	status_url: string;
	queue: string | null;
	created: boolean;
}

/** A finished job, as a callback brings it or its status tells it. */
export interface CallbackBody {
	job_id: string;
	status: string;
	items?: WireItem[];
	errors?: ItemError[];
	error?: { code: string; message: string } | null;
	duration_ms?: number;
	item_count?: number;
	trace_id?: string;
}

type JobRecord = CallbackBody & IDataObject;

interface JobSettings {
	processingType: string;
	parameters: IDataObject;
	priority: number;
	timeoutSeconds: number;
	idempotencyKey: string;
	batchSize: number;
	parallelBatches: number;
}

function settingsOf(context: IExecuteFunctions): JobSettings {
	const options = context.getNodeParameter('options', 0, {}) as IDataObject;
	return {
		processingType: context.getNodeParameter('processingType', 0) as string,
		parameters: parametersFor(context, 0),
		priority: (options.priority as number | undefined) ?? 5,
		timeoutSeconds: (options.timeout as number | undefined) ?? 0,
		idempotencyKey: (options.idempotencyKey as string | undefined) || defaultKey(context),
		batchSize: Math.max(1, (options.batchSize as number | undefined) ?? 2000),
		parallelBatches: Math.max(1, (options.parallelBatches as number | undefined) ?? 2),
	};
}

/**
 * The default idempotency key: this run of this node (the run index counts a looping node's runs),
 * which a node retried by n8n keeps. Execution IDs count up from 1 in every n8n, so the key also
 * holds this n8n instance and workflow (the same workflow in a staging and a production n8n would
 * share keys otherwise); readable in front, a digest of instance, workflow, execution and node
 * behind.
 */
function defaultKey(context: IExecuteFunctions): string {
	const executionId = context.getExecutionId();
	const node = context.getNode().name;
	// A node in a loop runs again in the same execution: each run is its own (a retry is not).
	const run = runIndex(context);
	const digest = createHash('sha256')
		.update([context.getInstanceId(), context.getWorkflow().id ?? '', executionId, node].join('\n'))
		.digest('hex')
		.slice(0, 24);
	return `${executionId}:${node.slice(0, 64)}:${run}:${digest}`;
}

/** Which run of this node in its execution this is (a node in a loop runs once a round). */
function runIndex(context: IExecuteFunctions): number {
	return Number(context.evaluateExpression('{{ $runIndex }}', 0)) || 0;
}

function requestBody(context: IExecuteFunctions, settings: JobSettings): IDataObject {
	const body: IDataObject = {
		processing_type: settings.processingType,
		parameters: settings.parameters,
		workflow_id: context.getWorkflow().id,
		execution_id: context.getExecutionId(),
		node: context.getNode().name,
		priority: settings.priority,
	};
	if (settings.timeoutSeconds > 0) body.timeout_s = settings.timeoutSeconds;
	return body;
}

/** n8n's own error classes pass as they are; anything else is wrapped. */
function asNodeError(node: INode, error: unknown): NodeApiError | NodeOperationError {
	if (error instanceof NodeApiError || error instanceof NodeOperationError) return error;
	return new NodeOperationError(node, error as Error);
}

/** Whether failures become error items: the node's "On Error" says so, or it runs as an AI
 * agent's tool (the model reads the error item and can correct its call; a thrown error reaches
 * the model as nothing). */
function tolerant(node: INode): boolean {
	return (
		node.type.endsWith('Tool') ||
		node.continueOnFail === true ||
		node.onError === 'continueRegularOutput' ||
		node.onError === 'continueErrorOutput'
	);
}

/** Where a processed batch or job came from: for naming its failed items. */
interface Origin {
	offset: number;
	jobId?: string;
	traceId?: string;
}

function itemFailure(error: ItemError, origin: Origin): Failure {
	const failure: Failure = {
		message: error.message,
		code: error.code,
		item: origin.offset + error.index,
	};
	if (origin.jobId) failure.job_id = origin.jobId;
	if (origin.traceId) failure.trace_id = origin.traceId;
	return failure;
}

/**
 * Outputs and per-item errors in input order. Errors throw unless the node continues on fail or
 * cannot throw (a resumed execution): then they are error items, which n8n routes to the error
 * output when the node's "On Error" setting asks for one.
 */
async function collect(
	context: IExecuteFunctions | IWebhookFunctions,
	items: WireItem[],
	errors: ItemError[],
	origin: Origin,
	canThrow: boolean,
): Promise<INodeExecutionData[]> {
	const node = context.getNode();
	if (errors.length && canThrow && !tolerant(node)) {
		throw failureError(node, itemFailure(errors[0], origin));
	}
	const out = await fromWire(context, items, origin.offset);
	if (!errors.length) return out; // the bridge answers in input order
	for (const error of errors) {
		out.push(errorItem(itemFailure(error, origin), origin.offset + error.index));
	}
	const position = (item: INodeExecutionData) =>
		(item.pairedItem as { item: number } | undefined)?.item ?? 0;
	return out.sort((a, b) => position(a) - position(b));
}

/**
 * Runs one operation. When the node continues on fail, a failure of the whole operation (the
 * bridge unreachable at submit, bad Parameters (JSON), no Callback Secret where one is needed)
 * gives every input an error item: n8n itself would pass the input items on, unchanged, on the
 * main output, as if they had been processed.
 */
export async function guarded(
	context: IExecuteFunctions,
	operation: (context: IExecuteFunctions) => Promise<INodeExecutionData[][]>,
): Promise<INodeExecutionData[][]> {
	try {
		return await operation(context);
	} catch (error) {
		if (!tolerant(context.getNode())) throw asNodeError(context.getNode(), error);
		const failure = failureOf(error);
		return [context.getInputData().map((_, item) => errorItem(failure, item))];
	}
}

/** Execute: the items in batches, some in parallel; results paired with their inputs. */
export async function execute(context: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const settings = settingsOf(context);
	const starts: number[] = [];
	for (let start = 0; start < items.length; start += settings.batchSize) starts.push(start);
	const results: INodeExecutionData[][] = new Array(starts.length);
	let next = 0;
	const worker = async () => {
		while (next < starts.length) {
			const batch = next++;
			results[batch] = await runBatch(context, settings, items, starts[batch], batch);
		}
	};
	await Promise.all(
		Array.from({ length: Math.min(settings.parallelBatches, starts.length) }, worker),
	);
	return [results.flat()];
}

async function runBatch(
	context: IExecuteFunctions,
	settings: JobSettings,
	items: INodeExecutionData[],
	start: number,
	batch: number,
): Promise<INodeExecutionData[]> {
	const slice = items.slice(start, start + settings.batchSize);
	const body = {
		...requestBody(context, settings),
		mode: 'sync',
		items: (await toWire(context, slice, start)) as unknown as IDataObject[],
		idempotency_key: `${settings.idempotencyKey}:${batch}`,
	};
	try {
		const { body: answer } = await bridgeRequest<ExecuteAnswer>(
			context,
			'POST',
			'/api/v1/workflow/execute',
			body,
			{ itemIndex: start },
		);
		const origin = { offset: start, jobId: answer.job_id, traceId: answer.trace_id };
		return await collect(context, answer.items, answer.errors, origin, true);
	} catch (error) {
		if (!tolerant(context.getNode())) throw asNodeError(context.getNode(), error);
		const failure = failureOf(error);
		return slice.map((_, index) => errorItem(failure, start + index));
	}
}

/** Submit Job: one background job with every item; outputs its ID. */
export async function submit(context: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const settings = settingsOf(context);
	const { body } = await bridgeRequest<Accepted>(context, 'POST', '/api/v1/workflow/execute', {
		...requestBody(context, settings),
		mode: 'async',
		items: (await toWire(context, items, 0)) as unknown as IDataObject[],
		idempotency_key: settings.idempotencyKey,
	});
	return [
		[{ json: body as unknown as IDataObject, pairedItem: items.map((_, item) => ({ item })) }],
	];
}

/** Get Job Status / Cancel Job: one call per input item, for the job its `Job ID` names. */
export async function perJob(
	context: IExecuteFunctions,
	operation: 'getStatus' | 'cancel',
): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const out: INodeExecutionData[] = [];
	for (let index = 0; index < items.length; index++) {
		try {
			const given = context.getNodeParameter('jobId', index) as unknown;
			const jobId = given === undefined || given === null ? '' : String(given).trim();
			if (!jobId) {
				throw new NodeOperationError(context.getNode(), 'Job ID is empty', { itemIndex: index });
			}
			const path =
				operation === 'cancel'
					? `/api/v1/workflow/${encodeURIComponent(jobId)}`
					: `/api/v1/workflow/status/${encodeURIComponent(jobId)}`;
			const { body } = await bridgeRequest<JobRecord>(
				context,
				operation === 'cancel' ? 'DELETE' : 'GET',
				path,
				undefined,
				{ itemIndex: index },
			);
			out.push({ json: body, pairedItem: { item: index } });
		} catch (error) {
			if (!tolerant(context.getNode())) throw asNodeError(context.getNode(), error);
			out.push(errorItem(failureOf(error), index));
		}
	}
	return [out];
}

/** Execute in Background and Wait: submit with this execution's resume URL, then wait. */
export async function executeAndWait(context: IExecuteFunctions): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const settings = settingsOf(context);
	const resumeUrl = context.evaluateExpression('{{ $execution.resumeUrl }}', 0) as string;
	const key = callbackKey((await credentialsOf(context)).callbackSecret);
	if (!key && !new URL(resumeUrl).searchParams.has('signature')) {
		// n8n 1.x: the resume URL is guessable (/webhook-waiting/<execution id>); unsigned, any
		// caller could resume this execution with items of its own.
		throw new NodeOperationError(
			context.getNode(),
			'Execute in Background and Wait needs the credential’s Callback Secret on this n8n',
			{
				description:
					'This n8n does not sign its resume URLs, so the node must check that the callback comes from the bridge: set the credential’s Callback Secret to the bridge’s BRIDGE_CALLBACK_SECRET.',
			},
		);
	}
	// With a secret, the URL carries a tag of this execution and node: a callback the bridge
	// signed for another job or execution (or a replay of one) is refused at resume.
	const callbackUrl = key
		? taggedResumeUrl(resumeUrl, resumeTag(key, resumePlace(context, runIndex(context))))
		: resumeUrl;
	const timeoutSeconds = settings.timeoutSeconds || DEFAULT_WAIT_SECONDS;
	const { body: accepted } = await bridgeRequest<Accepted>(
		context,
		'POST',
		'/api/v1/workflow/execute',
		{
			...requestBody(context, settings),
			timeout_s: timeoutSeconds,
			mode: 'async',
			items: (await toWire(context, items, 0)) as unknown as IDataObject[],
			callback_url: callbackUrl,
			callback_method: 'POST',
			idempotency_key: settings.idempotencyKey,
		},
	);
	if (!accepted.created && ['completed', 'failed', 'cancelled'].includes(accepted.status)) {
		// This node ran before with the same key (a retry): the job is done, its callback spent.
		const { body: job } = await bridgeRequest<JobRecord>(
			context,
			'GET',
			`/api/v1/workflow/status/${accepted.job_id}`,
		);
		return [await outcome(context, job, true)];
	}
	await context.putExecutionToWait(
		new Date(Date.now() + (timeoutSeconds + CALLBACK_GRACE_SECONDS) * 1000),
	);
	return [items];
}

/** The items a finished job gives this node, or the error that fails it (when it can). */
async function outcome(
	context: IExecuteFunctions | IWebhookFunctions,
	job: CallbackBody,
	canThrow: boolean,
): Promise<INodeExecutionData[]> {
	const origin = { offset: 0, jobId: job.job_id, traceId: job.trace_id };
	if (job.status === 'completed') {
		return await collect(context, job.items ?? [], job.errors ?? [], origin, canThrow);
	}
	const failure = jobFailure(job);
	if (canThrow && !tolerant(context.getNode())) throw failureError(context.getNode(), failure);
	// The job failed as a whole: each of its input items gets an error item.
	const count = Math.max(1, job.item_count ?? 1);
	return Array.from({ length: count }, (_, item) => errorItem(failure, item));
}

function jobFailure(job: CallbackBody): Failure {
	const reason = job.error?.message;
	const failure: Failure = {
		message:
			reason && reason !== job.status
				? `Background job ${job.job_id} ${job.status}: ${reason}`
				: `Background job ${job.job_id} ${job.status}`,
		code: job.error?.code ?? job.status,
		job_id: job.job_id,
		status: job.status,
	};
	if (job.trace_id) failure.trace_id = job.trace_id;
	if (job.error?.code === 'timeout') {
		failure.description = 'Raise the node’s Timeout option, or send fewer items.';
	}
	return failure;
}

/**
 * The resume webhook: the bridge's callback. A bad signature is refused (the execution keeps
 * waiting); a finished job's items become this node's output. n8n does not run a waiting node
 * again when it resumes — it passes on what this returns — so a failed job cannot stop the
 * execution here: it comes out as an error item (with the node's "On Error" set to use the error
 * output, n8n routes it there).
 */
export async function resume(context: IWebhookFunctions): Promise<IWebhookResponseData> {
	if (await refusedUnsigned(context, true)) return { noWebhookResponse: true };
	const body = context.getRequestObject().body as CallbackBody;
	return { workflowData: [await outcome(context, body, false)] };
}
