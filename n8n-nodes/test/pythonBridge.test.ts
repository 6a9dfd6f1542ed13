import { createHmac } from 'crypto';
import { assert, describe, it } from 'vitest';

import type {
	IDataObject,
	IExecuteFunctions,
	IHookFunctions,
	IHttpRequestOptions,
	INode,
	INodeExecutionData,
	IWebhookFunctions,
} from 'n8n-workflow';
import { NodeApiError, NodeOperationError } from 'n8n-workflow';

import { PythonBridgeApi } from '../credentials/PythonBridgeApi.credentials';
import { PythonBridgeTrigger } from '../nodes/PythonBridgeTrigger/PythonBridgeTrigger.node';
import {
	CALLBACK_GRACE_SECONDS,
	execute,
	executeAndWait,
	guarded,
	perJob,
	resume,
} from '../nodes/PythonBridge/operations';
import { fieldsOf } from '../nodes/PythonBridge/processors';
import { mintToken } from '../nodes/shared/jwt';
import { callbackKey, RESUME_TAG, resumeTag, verifySignature } from '../nodes/shared/signature';

const SECRET = 'whsec_' + Buffer.from('a dummy signing key for the unit tests').toString('base64');

type Reply = { statusCode: number; body: unknown };

interface Fake {
	context: IExecuteFunctions;
	requests: IHttpRequestOptions[];
	waitedUntil?: Date;
}

function node(extra: Partial<INode> = {}): INode {
	return {
		id: 'n1',
		name: 'Python Bridge',
		type: 'CUSTOM.pythonBridge',
		typeVersion: 1,
		position: [0, 0],
		parameters: {},
		...extra,
	};
}

/** An IExecuteFunctions with what the node uses, answering requests with `reply`. */
function fakeExecute(
	items: INodeExecutionData[],
	parameters: IDataObject,
	reply: (request: IHttpRequestOptions) => Reply,
	nodeExtra: Partial<INode> = {},
	credentials: IDataObject = {},
): Fake {
	const fake: Fake = { requests: [], context: undefined as unknown as IExecuteFunctions };
	const value = (name: string): unknown =>
		name
			.split('.')
			.reduce<unknown>((at, key) => (at as IDataObject | undefined)?.[key], parameters);
	fake.context = {
		getInputData: () => items,
		getNodeParameter: (name: string, _index: number, fallback?: unknown) => value(name) ?? fallback,
		getNode: () => node(nodeExtra),
		getExecutionId: () => 'exec-7',
		getInstanceId: () => 'instance-a',
		getWorkflow: () => ({ id: 'wf-1', name: 'wf', active: false }),
		getCredentials: async () => ({ baseUrl: 'http://bridge:8080/', ...credentials }),
		evaluateExpression: () => 'http://n8n:5678/webhook-waiting/exec-7',
		putExecutionToWait: async (date: Date) => {
			fake.waitedUntil = date;
		},
		helpers: {
			httpRequestWithAuthentication: async (_name: string, request: IHttpRequestOptions) => {
				fake.requests.push(request);
				return reply(request);
			},
			getBinaryDataBuffer: async () => Buffer.from('hello'),
			prepareBinaryData: async (data: Buffer, fileName?: string, mimeType?: string) => ({
				data: data.toString('base64'),
				fileName,
				mimeType: mimeType ?? 'application/octet-stream',
			}),
		},
	} as unknown as IExecuteFunctions;
	return fake;
}

const echo = (request: IHttpRequestOptions): Reply => {
	const body = request.body as { items: Array<{ json: IDataObject }> };
	return {
		statusCode: 200,
		body: {
			job_id: 'j',
			status: 'completed',
			items: body.items.map((item, index) => ({ json: item.json, pairedItem: { item: index } })),
			errors: [],
		},
	};
};

const items = (count: number): INodeExecutionData[] =>
	Array.from({ length: count }, (_, n) => ({ json: { n } }));

describe('Execute', () => {
	it('sends the items in batches and pairs every result with its input', async () => {
		const fake = fakeExecute(
			items(5),
			{ processingType: 'echo', parametersJson: '{"a": 1}', options: { batchSize: 2 } },
			echo,
		);
		const [out] = await execute(fake.context);
		assert.equal(fake.requests.length, 3);
		assert.deepEqual(
			out.map((item) => [item.json.n, item.pairedItem]),
			[0, 1, 2, 3, 4].map((n) => [n, { item: n }]),
		);
		const bodies = fake.requests.map((r) => r.body as IDataObject);
		const keys = bodies.map((b) => String(b.idempotency_key)).sort();
		assert.deepEqual(
			keys.map((key) => key.replace(/:[0-9a-f]{24}:/, ':…:')),
			['exec-7:Python Bridge:0:…:0', 'exec-7:Python Bridge:0:…:1', 'exec-7:Python Bridge:0:…:2'],
		);
		assert.deepEqual(bodies[0].parameters, { a: 1 });
		assert.equal(bodies[0].mode, 'sync');
		assert.equal(fake.requests[0].url, 'http://bridge:8080/api/v1/workflow/execute');
	});

	it('keys a run apart from the same execution ID in another n8n or workflow', async () => {
		const keyOf = async (instance: string, workflow: string) => {
			const fake = fakeExecute(items(1), { processingType: 'echo', options: {} }, echo);
			fake.context.getInstanceId = () => instance;
			fake.context.getWorkflow = () => ({ id: workflow, name: 'wf', active: false });
			await execute(fake.context);
			return (fake.requests[0].body as IDataObject).idempotency_key;
		};
		const key = await keyOf('staging', 'wf-1');
		assert.equal(await keyOf('staging', 'wf-1'), key); // a retried node keeps its key
		assert.notEqual(await keyOf('production', 'wf-1'), key);
		assert.notEqual(await keyOf('staging', 'wf-2'), key);
	});

	it('fails with the bridge’s message for a failed item, or outputs it with continueOnFail', async () => {
		const failing = (request: IHttpRequestOptions): Reply => {
			const answer = echo(request).body as { items: unknown[]; errors: unknown[] };
			answer.items.splice(1, 1);
			answer.errors.push({ index: 1, code: 'processor_error', message: 'ValueError: odd' });
			return { statusCode: 200, body: { ...answer, trace_id: 'trace-9' } };
		};
		const parameters = { processingType: 'x', options: {} };
		const error = await execute(fakeExecute(items(3), parameters, failing).context).catch(
			(e: unknown) => e,
		);
		assert.ok(error instanceof NodeOperationError);
		assert.equal(error.message, 'ValueError: odd');
		assert.equal(error.context.itemIndex, 1);
		assert.equal(
			error.description,
			'Code: processor_error · Item: 1 · Job ID: j · Trace ID: trace-9',
		);
		const tolerant = fakeExecute(items(3), parameters, failing, { continueOnFail: true });
		const [out] = await execute(tolerant.context);
		assert.deepEqual(out[1], {
			json: {
				message: 'ValueError: odd',
				error: {
					message: 'ValueError: odd',
					code: 'processor_error',
					item: 1,
					job_id: 'j',
					trace_id: 'trace-9',
				},
			},
			pairedItem: { item: 1 },
		});
		assert.deepEqual(
			out.map((item) => item.json.n ?? item.json.message),
			[0, 'ValueError: odd', 2],
		);
	});

	it('turns the bridge’s error body into a NodeApiError with code and trace id', async () => {
		const refused = (): Reply => ({
			statusCode: 422,
			body: {
				error: {
					code: 'validation',
					message: "unknown processing_type 'ehco'; valid: echo",
					description: null,
					http_code: 422,
					retryable: false,
					trace_id: 'trace-123',
				},
			},
		});
		const fake = fakeExecute(items(1), { processingType: 'ehco', options: {} }, refused);
		const error = await execute(fake.context).catch((e: unknown) => e);
		assert.ok(error instanceof NodeApiError);
		assert.equal(error.message, "unknown processing_type 'ehco'; valid: echo");
		assert.equal(error.httpCode, '422');
		assert.match(String(error.description), /trace-123/);
	});

	it('gives every item of a batch an error item when the bridge cannot be reached', async () => {
		const down = (): Reply => {
			throw new Error('connect ECONNREFUSED 127.0.0.1:1');
		};
		const parameters = { processingType: 'echo', options: { batchSize: 2 } };
		const fake = fakeExecute(items(3), parameters, down, { onError: 'continueErrorOutput' });
		const [out] = await execute(fake.context);
		assert.deepEqual(
			out.map((item) => [item.pairedItem, (item.json.error as IDataObject).code]),
			[0, 1, 2].map((item) => [{ item }, 'unreachable']),
		);
		assert.equal(out[0].json.message, 'The Python bridge at http://bridge:8080 cannot be reached');
		assert.equal(
			(out[0].json.error as IDataObject).description,
			'connect ECONNREFUSED 127.0.0.1:1',
		);
	});

	it('names the job of a request whose job failed as a whole', async () => {
		const failed = (): Reply => ({
			statusCode: 500,
			body: {
				error: {
					code: 'processor_error',
					message: 'processor crashed',
					http_code: 500,
					trace_id: 'trace-5',
					details: { job_id: 'job-5' },
				},
			},
		});
		const fake = fakeExecute(items(1), { processingType: 'crash', options: {} }, failed);
		const error = await execute(fake.context).catch((e: unknown) => e);
		assert.ok(error instanceof NodeApiError);
		assert.equal(error.description, 'Code: processor_error · Job ID: job-5 · Trace ID: trace-5');
	});

	it('sends binary data as base64 and brings it back as binary', async () => {
		const withFile: INodeExecutionData[] = [
			{ json: {}, binary: { file: { data: '', mimeType: 'text/plain', fileName: 'a.txt' } } },
		];
		const fake = fakeExecute(withFile, { processingType: 'echo', options: {} }, (request) => {
			const [item] = (request.body as { items: Array<{ binary: IDataObject }> }).items;
			return {
				statusCode: 200,
				body: { items: [{ json: {}, binary: item.binary, pairedItem: { item: 0 } }], errors: [] },
			};
		});
		const [[out]] = await execute(fake.context);
		const sent = (fake.requests[0].body as { items: Array<{ binary: { file: IDataObject } }> })
			.items[0].binary.file;
		assert.equal(sent.data, Buffer.from('hello').toString('base64'));
		assert.equal(out.binary?.file.fileName, 'a.txt');
	});
});

describe('Execute in Background and Wait', () => {
	it('submits with the resume URL and waits the timeout plus the callback grace', async () => {
		const fake = fakeExecute(
			items(2),
			{ processingType: 'echo', options: { timeout: 120 } },
			() => ({ statusCode: 202, body: { job_id: 'j1', status: 'queued', created: true } }),
			{},
			{ callbackSecret: SECRET },
		);
		const before = Date.now();
		const [out] = await executeAndWait(fake.context);
		const body = fake.requests[0].body as IDataObject;
		assert.equal(body.mode, 'async');
		assert.equal(body.callback_url, `http://n8n:5678/webhook-waiting/exec-7?${RESUME_TAG}=${TAG}`);
		assert.equal(body.callback_method, 'POST');
		assert.equal(body.timeout_s, 120);
		const waited = (fake.waitedUntil?.getTime() ?? 0) - before;
		assert.ok(waited >= (120 + CALLBACK_GRACE_SECONDS) * 1000 - 50);
		assert.equal(out.length, 2);
	});
});

describe('resume URLs anyone could call', () => {
	const accepted = (): Reply => ({
		statusCode: 202,
		body: { job_id: 'j1', status: 'queued', created: true },
	});

	it('refuses to wait on an unsigned resume URL (n8n 1.x) without a Callback Secret', async () => {
		const fake = fakeExecute(items(1), { processingType: 'echo', options: {} }, accepted);
		const error = await executeAndWait(fake.context).catch((e: unknown) => e);
		assert.ok(error instanceof NodeOperationError);
		assert.match(error.message, /needs the credential’s Callback Secret/);
		assert.equal(fake.requests.length, 0); // nothing submitted
	});

	it('waits on a resume URL n8n signed (2.x), with or without a Callback Secret', async () => {
		const fake = fakeExecute(items(1), { processingType: 'echo', options: {} }, accepted);
		const signedUrl = 'http://n8n:5678/webhook-waiting/exec-7?signature=abc';
		fake.context.evaluateExpression = () => signedUrl;
		await executeAndWait(fake.context);
		assert.equal((fake.requests[0].body as IDataObject).callback_url, signedUrl);
	});
});

describe('a whole operation that fails, with On Error set', () => {
	const down = (): Reply => {
		throw new Error('connect ECONNREFUSED 127.0.0.1:1');
	};
	const continuing = { onError: 'continueErrorOutput' as const };

	it('gives every input an error item instead of passing the inputs on', async () => {
		const waiting = fakeExecute(
			items(2),
			{ processingType: 'echo', options: {} },
			down,
			continuing,
			{ callbackSecret: SECRET },
		);
		const [out] = await guarded(waiting.context, executeAndWait);
		assert.deepEqual(
			out.map((item) => [item.pairedItem, (item.json.error as IDataObject).code]),
			[0, 1].map((item) => [{ item }, 'unreachable']),
		);
		const badJson = fakeExecute(
			items(1),
			{ processingType: 'echo', parametersJson: '{not json', options: {} },
			echo,
			continuing,
		);
		const [[item]] = await guarded(badJson.context, execute);
		assert.equal(item.json.message, 'Parameters (JSON) is not valid JSON');
		assert.equal((item.json.error as IDataObject).code, 'node_error');
	});

	it('still stops the workflow without On Error', async () => {
		const fake = fakeExecute(
			items(1),
			{ processingType: 'echo', options: {} },
			down,
			{},
			{
				callbackSecret: SECRET,
			},
		);
		const error = await guarded(fake.context, executeAndWait).catch((e: unknown) => e);
		assert.ok(error instanceof NodeApiError);
	});

	it('names a Job ID an expression left empty as empty, and asks the bridge nothing', async () => {
		const fake = fakeExecute(items(1), { jobId: undefined }, echo, continuing);
		const [[item]] = await guarded(fake.context, async (c) => await perJob(c, 'getStatus'));
		assert.equal(item.json.message, 'Job ID is empty');
		assert.equal(fake.requests.length, 0);
	});
});

describe('as an AI agent’s tool', () => {
	it('hands a failure to the model as an error item instead of throwing', async () => {
		const refused = (): Reply => ({
			statusCode: 422,
			body: { error: { code: 'validation', message: 'unknown processor', http_code: 422 } },
		});
		const tool = { type: 'CUSTOM.pythonBridgeTool' };
		const fake = fakeExecute(items(1), { processingType: 'nope', options: {} }, refused, tool);
		const [[item]] = await execute(fake.context);
		assert.equal(item.json.message, 'unknown processor');
		assert.equal((item.json.error as IDataObject).code, 'validation');
	});
});

function signed(body: string, id = 'cb_1', timestamp = Math.floor(Date.now() / 1000)) {
	const key = Buffer.from(SECRET.slice('whsec_'.length), 'base64');
	const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
	return {
		'webhook-id': id,
		'webhook-timestamp': String(timestamp),
		'webhook-signature': `v1,${signature}`,
	};
}

/** The tag the node adds to the resume URL it gives the bridge, for execution `exec-7`. */
const PLACE = {
	instanceId: 'instance-a',
	workflowId: 'wf-1',
	executionId: 'exec-7',
	node: 'Python Bridge',
	run: 0,
};
const KEY = callbackKey(SECRET) as Buffer;
const TAG = resumeTag(KEY, PLACE);
const RESUME_URL = `http://n8n:5678/webhook-waiting/exec-7?${RESUME_TAG}=${TAG}`;

function fakeWebhook(
	body: IDataObject,
	headers: Record<string, string>,
	query: IDataObject = { [RESUME_TAG]: TAG },
	secret: string = SECRET,
	round = 0,
) {
	const sent: { status?: number; json?: unknown } = {};
	const raw = JSON.stringify(body);
	const context = {
		getRequestObject: () => ({ body, headers, rawBody: Buffer.from(raw) }),
		getQueryData: () => query,
		getExecutionId: () => 'exec-7',
		getInstanceId: () => 'instance-a',
		getWorkflow: () => ({ id: 'wf-1', name: 'wf', active: false }),
		getResponseObject: () => ({
			status(code: number) {
				sent.status = code;
				return this;
			},
			json(value: unknown) {
				sent.json = value;
			},
		}),
		// the node's runs before the waiting one, as n8n hands them to the resume webhook (2.x
		// leaves a placeholder without a status where the waiting run was)
		runExecutionData: {
			resultData: {
				runData: {
					'Python Bridge': [
						...Array.from({ length: round }, () => ({ executionStatus: 'success' })),
						{ startTime: 0, executionTime: 0, inputOverride: {} },
					],
				},
			},
		},
		getCredentials: async () => ({ callbackSecret: secret }),
		getNode: () => node(),
		helpers: { prepareBinaryData: async () => ({}) },
	} as unknown as IWebhookFunctions;
	return { context, sent, raw };
}

describe('resume (the callback)', () => {
	const completed = {
		job_id: 'j1',
		workflow_id: 'wf-1',
		execution_id: 'exec-7',
		callback_url: RESUME_URL,
		status: 'completed',
		items: [{ json: { n: 1 }, pairedItem: { item: 0 } }],
		errors: [],
	};

	it('outputs the job’s items when the signature is right', async () => {
		const { context } = fakeWebhook(completed, signed(JSON.stringify(completed)));
		const answer = await resume(context);
		assert.deepEqual(answer.workflowData, [[{ json: { n: 1 }, pairedItem: { item: 0 } }]]);
	});

	it('refuses a callback the bridge signed for another execution or job, and keeps waiting', async () => {
		const body = JSON.stringify(completed);
		const elsewhere = resumeTag(KEY, { ...PLACE, executionId: 'exec-6' });
		for (const query of [{}, { [RESUME_TAG]: elsewhere }, { [RESUME_TAG]: TAG.slice(1) }]) {
			const { context, sent } = fakeWebhook(completed, signed(body), query);
			assert.deepEqual(await resume(context), { noWebhookResponse: true });
			assert.equal(sent.status, 401);
			assert.match(String((sent.json as IDataObject).message), /not for this execution/);
		}
	});

	it('refuses a callback meant for another resume URL: another n8n’s, an earlier round’s', async () => {
		const otherN8n = resumeTag(KEY, { ...PLACE, instanceId: 'instance-b' });
		const elsewhere = {
			...completed,
			callback_url: `http://staging:5678/webhook-waiting/exec-7?${RESUME_TAG}=${otherN8n}`,
		};
		const { context, sent } = fakeWebhook(elsewhere, signed(JSON.stringify(elsewhere)));
		assert.deepEqual(await resume(context), { noWebhookResponse: true });
		assert.equal(sent.status, 401);
		assert.match(String((sent.json as IDataObject).message), /meant for another resume URL/);
		// The bridge retries round 0's callback while round 1 of a loop waits: refused.
		const late = fakeWebhook(completed, signed(JSON.stringify(completed)), undefined, SECRET, 1);
		assert.deepEqual(await resume(late.context), { noWebhookResponse: true });
		assert.equal(late.sent.status, 401);
		// Round 1's own callback is taken.
		const round1 = `http://n8n:5678/webhook-waiting/exec-7?${RESUME_TAG}=${resumeTag(KEY, { ...PLACE, run: 1 })}`;
		const own = { ...completed, callback_url: round1 };
		const query = { [RESUME_TAG]: new URL(round1).searchParams.get(RESUME_TAG) };
		const taken = fakeWebhook(own, signed(JSON.stringify(own)), query, SECRET, 1);
		assert.ok((await resume(taken.context)).workflowData);
	});

	it('refuses a tagged callback of a job of another workflow or execution', async () => {
		for (const other of [{ workflow_id: 'wf-other' }, { execution_id: 'exec-6' }]) {
			const body = { ...completed, ...other };
			const { context, sent } = fakeWebhook(body, signed(JSON.stringify(body)));
			assert.deepEqual(await resume(context), { noWebhookResponse: true });
			assert.equal(sent.status, 401);
			assert.match(String((sent.json as IDataObject).message), /another workflow or execution/);
		}
	});

	it('keys each run of a node in a loop apart, and a retry alike', async () => {
		const keyOfRun = async (run: number) => {
			const fake = fakeExecute(items(1), { processingType: 'echo', options: {} }, echo);
			fake.context.evaluateExpression = (expression: string) =>
				expression.includes('$runIndex') ? run : 'http://n8n:5678/webhook-waiting/exec-7';
			await execute(fake.context);
			return (fake.requests[0].body as IDataObject).idempotency_key;
		};
		assert.equal(await keyOfRun(1), await keyOfRun(1));
		assert.notEqual(await keyOfRun(1), await keyOfRun(0));
	});

	it('refuses every callback while the Callback Secret is too short to be the bridge’s', async () => {
		const weak = 'whsec_';
		const { context, sent } = fakeWebhook(completed, signed(JSON.stringify(completed)), {}, weak);
		assert.deepEqual(await resume(context), { noWebhookResponse: true });
		assert.equal(sent.status, 401);
		assert.match(String((sent.json as IDataObject).message), /Callback Secret is too short/);
	});

	it('refuses a bad signature and keeps waiting', async () => {
		const { context, sent } = fakeWebhook(completed, signed('something else'));
		const answer = await resume(context);
		assert.equal(sent.status, 401);
		assert.deepEqual(answer, { noWebhookResponse: true });
	});

	it('gives every input of a failed job an error item', async () => {
		const failed = {
			job_id: 'j2',
			workflow_id: 'wf-1',
			execution_id: 'exec-7',
			callback_url: RESUME_URL,
			status: 'failed',
			error: { code: 'timeout', message: 'processor did not finish within 60 s' },
			item_count: 3,
			trace_id: 'trace-2',
		};
		const { context } = fakeWebhook(failed, signed(JSON.stringify(failed)));
		const answer = await resume(context);
		const [out] = answer.workflowData ?? [[]];
		assert.deepEqual(
			out.map((item) => item.pairedItem),
			[0, 1, 2].map((item) => ({ item })),
		);
		const message = 'Background job j2 failed: processor did not finish within 60 s';
		assert.deepEqual(out[2].json, {
			message,
			error: {
				message,
				code: 'timeout',
				job_id: 'j2',
				status: 'failed',
				trace_id: 'trace-2',
				description: 'Raise the node’s Timeout option, or send fewer items.',
				item: 2,
			},
		});
	});
});

describe('credentials', () => {
	const credential = new PythonBridgeApi();

	it('mints a short-lived HS256 token with the scopes the request needs', async () => {
		const secret = 'dummy-jwt-secret-that-is-long-enough-0123';
		const authenticate = credential.authenticate as (
			c: IDataObject,
			r: IHttpRequestOptions,
		) => Promise<IHttpRequestOptions>;
		const options = await authenticate(
			{ authentication: 'jwtSecret', jwtSecret: secret, audience: 'aud-x', issuer: 'iss-y' },
			{ url: 'http://bridge/api/v1/subscriptions' },
		);
		const token = String(options.headers?.Authorization).replace('Bearer ', '');
		const [header, payload, signature] = token.split('.');
		const expected = createHmac('sha256', secret)
			.update(`${header}.${payload}`)
			.digest('base64url');
		assert.equal(signature, expected);
		const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
		assert.equal(claims.aud, 'aud-x');
		assert.equal(claims.iss, 'iss-y');
		assert.equal(claims.scope, 'admin');
		assert.ok(claims.exp - claims.iat <= 300);
		const plain = await authenticate(
			{ authentication: 'jwtSecret', jwtSecret: secret },
			{ url: 'http://bridge/api/v1/workflow/execute' },
		);
		const plainClaims = JSON.parse(
			Buffer.from(String(plain.headers?.Authorization).split('.')[1], 'base64url').toString(),
		);
		assert.equal(plainClaims.scope, 'execute status');
	});

	it('sends an API key or a static token as they are', async () => {
		const authenticate = credential.authenticate as (
			c: IDataObject,
			r: IHttpRequestOptions,
		) => Promise<IHttpRequestOptions>;
		const key = await authenticate({ authentication: 'apiKey', apiKey: 'k-123' }, { url: '/x' });
		assert.equal(key.headers?.['X-API-Key'], 'k-123');
		const bearer = await authenticate(
			{ authentication: 'bearerToken', token: 't-9' },
			{ url: '/x' },
		);
		assert.equal(bearer.headers?.Authorization, 'Bearer t-9');
	});

	it('is tested against GET /api/v1/processors', () => {
		assert.equal(credential.test.request.url, '/api/v1/processors');
	});
});

describe('workflow-limited tokens', () => {
	const secret = 'dummy-jwt-secret-that-is-long-enough-0123';
	const jwtCredentials = { authentication: 'jwtSecret', jwtSecret: secret };
	const authenticate = new PythonBridgeApi().authenticate as (
		c: IDataObject,
		r: IHttpRequestOptions,
	) => Promise<IHttpRequestOptions>;

	function claimsOf(request: IHttpRequestOptions): IDataObject {
		const token = String(request.headers?.Authorization).replace('Bearer ', '');
		const [header, payload, signature] = token.split('.');
		const expected = createHmac('sha256', secret)
			.update(`${header}.${payload}`)
			.digest('base64url');
		assert.equal(signature, expected);
		return JSON.parse(Buffer.from(payload, 'base64url').toString()) as IDataObject;
	}

	it('the node mints each request’s token for the workflow it runs in, and the credential keeps it', async () => {
		const fake = fakeExecute(items(1), { processingType: 'echo' }, echo, {}, jwtCredentials);
		await execute(fake.context);
		const [request] = fake.requests;
		const claims = claimsOf(request);
		assert.deepEqual(claims.workflows, ['wf-1']);
		assert.equal(claims.scope, 'execute status');
		assert.equal((request.body as IDataObject).workflow_id, 'wf-1');
		const sent = await authenticate(jwtCredentials, request);
		assert.equal(sent.headers?.Authorization, request.headers?.Authorization);
	});

	it('anything else the credential signs reaches no workflow', async () => {
		const plain = await authenticate(jwtCredentials, { url: 'http://bridge/api/v1/status/wf-2' });
		assert.deepEqual(claimsOf(plain).workflows, []);
		// A token the caller brings is replaced unless this secret signed it (the HTTP Request node
		// can use the credential and set any header).
		const forged = mintToken('another-secret-that-is-long-enough-0123456', {
			audience: 'n8n-bridge',
			issuer: 'n8n-bridge',
			scopes: ['admin'],
		});
		const replaced = await authenticate(jwtCredentials, {
			url: 'http://bridge/admin/drain',
			headers: { Authorization: `Bearer ${forged}` },
		});
		assert.deepEqual(claimsOf(replaced).workflows, []);
	});

	it('a workflow without an id gets a token for no workflow', async () => {
		const fake = fakeExecute(items(1), { processingType: 'echo' }, echo, {}, jwtCredentials);
		(fake.context as unknown as { getWorkflow: () => object }).getWorkflow = () => ({
			active: false,
		});
		await execute(fake.context);
		assert.deepEqual(claimsOf(fake.requests[0]).workflows, []);
	});

	it('the trigger subscribes with an admin token limited to its workflow', async () => {
		const requests: IHttpRequestOptions[] = [];
		const staticData: IDataObject = {};
		const hook = {
			getCredentials: async () => ({ baseUrl: 'http://bridge:8080', ...jwtCredentials }),
			getNodeParameter: (name: string, fallback?: unknown) =>
				({ events: ['workflow.failed'], workflowId: '' })[name] ?? fallback,
			getNodeWebhookUrl: () => 'http://n8n:5678/webhook/abc',
			getWorkflow: () => ({ id: 'wf-9', active: true }),
			getNode: () => node({ name: 'Python Bridge Trigger' }),
			getWorkflowStaticData: () => staticData,
			helpers: {
				httpRequestWithAuthentication: async (_name: string, request: IHttpRequestOptions) => {
					requests.push(request);
					return { statusCode: 201, body: { id: 's-1', url: 'http://n8n:5678/webhook/abc' } };
				},
			},
		} as unknown as IHookFunctions;
		const trigger = new PythonBridgeTrigger();
		assert.equal(await trigger.webhookMethods.default.create.call(hook), true);
		const [request] = requests;
		const claims = claimsOf(request);
		assert.deepEqual(claims.workflows, ['wf-9']);
		assert.equal(claims.scope, 'admin');
		assert.equal(staticData.subscriptionId, 's-1');
	});
});

describe('signatures', () => {
	it('accepts the right signature and refuses the rest, saying why', () => {
		const body = '{"a":1}';
		assert.equal(verifySignature(SECRET, signed(body), body), undefined);
		assert.match(String(verifySignature(SECRET, {}, body)), /not signed/);
		assert.match(String(verifySignature(SECRET, signed(body, 'cb_1', 1000), body)), /5 minutes/);
		assert.match(String(verifySignature(SECRET, signed(body), '{"a":2}')), /does not match/);
	});
});

describe('processor fields', () => {
	it('offers simple parameters as fields and leaves objects and lists to the JSON', () => {
		const fields = fieldsOf({
			properties: {
				template: { anyOf: [{ type: 'string' }, { type: 'null' }], title: 'Template' },
				strict_undefined: { type: 'boolean' },
				times: { type: 'integer' },
				on_invalid: { type: 'string', enum: ['mark', 'fail'] },
				headers: { type: 'object' },
				email_fields: { type: 'array' },
			},
			required: ['times'],
		});
		assert.deepEqual(
			fields.map((f) => [f.id, f.type, f.required]),
			[
				['template', 'string', false],
				['strict_undefined', 'boolean', false],
				['times', 'number', true],
				['on_invalid', 'options', false],
			],
		);
	});
});
