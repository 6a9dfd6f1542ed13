import type { INodeProperties } from 'n8n-workflow';

const JOB_OPERATIONS = ['execute', 'executeAndWait', 'submit'];

export const properties: INodeProperties[] = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		options: [
			{
				name: 'Cancel Job',
				value: 'cancel',
				description: 'Cancel a queued or running job',
				action: 'Cancel a job',
			},
			{
				name: 'Execute',
				value: 'execute',
				description: 'Run a Python processor on the items and output its results',
				action: 'Execute a processor',
			},
			{
				name: 'Execute in Background and Wait',
				value: 'executeAndWait',
				description:
					'Hand the items to a background job; this execution waits, without holding anything, until the bridge calls back',
				action: 'Execute in background and wait',
			},
			{
				name: 'Get Job Status',
				value: 'getStatus',
				description: 'Output a job’s status, and its result items once it has finished',
				action: 'Get a job status',
			},
			{
				name: 'Submit Job',
				value: 'submit',
				description: 'Start a background job and output its ID at once',
				action: 'Submit a job',
			},
		],
		default: 'execute',
	},
	{
		displayName: 'Processing Type Name or ID',
		name: 'processingType',
		type: 'options',
		typeOptions: { loadOptionsMethod: 'getProcessors' },
		required: true,
		default: '',
		description:
			'The Python processor to run. Choose from the list, or specify an ID using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
		displayOptions: { show: { operation: JOB_OPERATIONS } },
	},
	{
		displayName: 'Parameters',
		name: 'processorFields',
		type: 'resourceMapper',
		noDataExpression: true,
		default: { mappingMode: 'defineBelow', value: null },
		typeOptions: {
			loadOptionsDependsOn: ['processingType'],
			resourceMapper: {
				resourceMapperMethod: 'getProcessorFields',
				mode: 'add',
				fieldWords: { singular: 'parameter', plural: 'parameters' },
				addAllFields: false,
				multiKeyMatch: false,
				supportAutoMap: false,
			},
		},
		description: 'The processor’s simple parameters as fields (its JSON Schema decides which)',
		displayOptions: { show: { operation: JOB_OPERATIONS } },
	},
	{
		displayName: 'Parameters (JSON)',
		name: 'parametersJson',
		type: 'json',
		default: '{}',
		description:
			'All of the processor’s parameters as JSON (fields above win over the same keys here)',
		displayOptions: { show: { operation: JOB_OPERATIONS } },
	},
	{
		displayName: 'Job ID',
		name: 'jobId',
		type: 'string',
		required: true,
		default: '={{ $json.job_id }}',
		displayOptions: { show: { operation: ['getStatus', 'cancel'] } },
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add option',
		default: {},
		displayOptions: { show: { operation: JOB_OPERATIONS } },
		options: [
			{
				displayName: 'Batch Size',
				name: 'batchSize',
				type: 'number',
				typeOptions: { minValue: 1 },
				default: 2000,
				description:
					'Items per request (Execute). Lower it for large items: a request may not exceed the bridge’s body limit (BRIDGE_MAX_BODY_BYTES, 16 MiB by default).',
				displayOptions: { show: { '/operation': ['execute'] } },
			},
			{
				displayName: 'Batches in Parallel',
				name: 'parallelBatches',
				type: 'number',
				typeOptions: { minValue: 1, maxValue: 16 },
				default: 2,
				description: 'Requests in flight at once (Execute)',
				displayOptions: { show: { '/operation': ['execute'] } },
			},
			{
				displayName: 'Idempotency Key',
				name: 'idempotencyKey',
				type: 'string',
				default: '',
				description:
					'The same key never runs twice. Default: this execution’s ID, the node’s name and the batch, so a retried node does not send again.',
			},
			{
				displayName: 'Priority',
				name: 'priority',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 9 },
				default: 5,
				description: 'Whether background jobs run sooner (9) or later (0) than others',
			},
			{
				displayName: 'Timeout (Seconds)',
				name: 'timeout',
				type: 'number',
				typeOptions: { minValue: 0 },
				default: 0,
				description:
					'Bound on the processor’s run; 0: its own. Execute in Background and Wait waits this long (default 1 hour), plus time for the callback.',
			},
		],
	},
];
