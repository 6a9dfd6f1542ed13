import { assert, describe, it } from 'vitest';

import type {
	IAdditionalCredentialOptions,
	IDataObject,
	IExecuteFunctions,
	IHttpRequestOptions,
	INodeExecutionData,
	INodeProperties,
} from 'n8n-workflow';

import { properties } from '../nodes/PythonBridge/description';
import { execute } from '../nodes/PythonBridge/operations';

const CREDENTIALS = { baseUrl: 'http://bridge:8080', authentication: 'apiKey', apiKey: 'k' };

interface Sent {
	items: number;
	credentials?: IDataObject;
}

/** An Execute run over `count` items against a bridge that echoes them. */
async function run(count: number, options: IDataObject) {
	const sent: Sent[] = [];
	let reads = 0;
	let inFlight = 0;
	let mostInFlight = 0;
	const context = {
		getInputData: (): INodeExecutionData[] =>
			Array.from({ length: count }, (_, n) => ({ json: { n } })),
		getNodeParameter: (name: string, _index: number, fallback?: unknown) =>
			({ processingType: 'echo', parametersJson: '{}', options })[name] ?? fallback,
		getNode: () => ({ name: 'Python Bridge', parameters: {} }),
		getExecutionId: () => 'exec-1',
		getInstanceId: () => 'instance-a',
		evaluateExpression: () => 0,
		getWorkflow: () => ({ id: 'wf-1' }),
		getCredentials: async () => {
			reads++;
			return CREDENTIALS;
		},
		helpers: {
			httpRequestWithAuthentication: async (
				_name: string,
				request: IHttpRequestOptions,
				extra?: IAdditionalCredentialOptions,
			) => {
				const items = (request.body as { items: INodeExecutionData[] }).items;
				sent.push({ items: items.length, credentials: extra?.credentialsDecrypted?.data });
				mostInFlight = Math.max(mostInFlight, ++inFlight);
				await Promise.resolve(); // the answer comes later, as over a network
				inFlight--;
				return {
					statusCode: 200,
					body: {
						job_id: 'j',
						status: 'completed',
						items: items.map((item, index) => ({ json: item.json, pairedItem: { item: index } })),
						errors: [],
					},
				};
			},
		},
	} as unknown as IExecuteFunctions;
	const [out] = await execute(context);
	return { out, sent, reads, mostInFlight };
}

function option(name: string): INodeProperties | undefined {
	const options = properties.find((p) => p.name === 'options')?.options as INodeProperties[];
	return options.find((o) => o.name === name);
}

describe('Execute batching', () => {
	it('sends 2,000 items per request, two requests at a time, by default', async () => {
		const { out, sent, mostInFlight } = await run(4001, {});
		assert.deepEqual(
			sent.map((s) => s.items),
			[2000, 2000, 1],
		);
		assert.equal(mostInFlight, 2);
		assert.deepEqual(
			out.map((item) => item.pairedItem),
			Array.from({ length: 4001 }, (_, item) => ({ item })),
		);
		// What the editor shows is what the node does (tests/test_node_docs.py: and the README).
		assert.equal(option('batchSize')?.default, 2000);
		assert.equal(option('parallelBatches')?.default, 2);
	});

	it('reads the credentials once per run, however many requests it sends', async () => {
		const { sent, reads } = await run(50, { batchSize: 10, parallelBatches: 3 });
		assert.equal(sent.length, 5);
		assert.equal(reads, 1);
		// n8n would read them again for each request unless they are handed to it.
		for (const request of sent) assert.deepEqual(request.credentials, CREDENTIALS);
	});
});
