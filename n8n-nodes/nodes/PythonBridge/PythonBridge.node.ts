import type {
	IExecuteFunctions,
	INodeExecutionData,
	INodeType,
	INodeTypeDescription,
	IWebhookDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes } from 'n8n-workflow';

import { properties } from './description';
import { execute, executeAndWait, guarded, perJob, resume, submit } from './operations';
import { getProcessorFields, getProcessors } from './processors';
import { withToolVariant } from './tool';

/**
 * Execute in Background and Wait resumes through this webhook ($execution.resumeUrl), the pattern
 * of n8n's Wait node (`restartWebhook`): it exists only while an execution waits, so this node
 * registers nothing with the bridge and has no webhook lifecycle of its own.
 */
const RESUME_WEBHOOKS: IWebhookDescription[] = [
	{
		name: 'default',
		httpMethod: 'POST',
		responseMode: 'onReceived',
		path: '',
		restartWebhook: true,
		isFullPath: true,
	},
];

export class PythonBridge implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Python Bridge',
		name: 'pythonBridge',
		icon: {
			light: 'file:../../icons/pythonBridge.svg',
			dark: 'file:../../icons/pythonBridge.dark.svg',
		},
		group: ['transform'],
		version: [1],
		subtitle:
			'={{ $parameter["operation"] + ($parameter["processingType"] ? ": " + $parameter["processingType"] : "") }}',
		description: 'Run real Python on your items with n8n-bridge: now, or as a background job',
		defaults: { name: 'Python Bridge' },
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		usableAsTool: true,
		credentials: [{ name: 'pythonBridgeApi', required: true }],
		webhooks: RESUME_WEBHOOKS,
		properties: withToolVariant(properties),
	};

	methods = {
		loadOptions: { getProcessors },
		resourceMapping: { getProcessorFields },
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		return await resume(this);
	}

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const operation = this.getNodeParameter('operation', 0) as string;
		if (operation === 'executeAndWait') return await guarded(this, executeAndWait);
		if (operation === 'submit') return await guarded(this, submit);
		if (operation === 'getStatus' || operation === 'cancel') {
			return await guarded(this, async (context) => await perJob(context, operation));
		}
		return await guarded(this, execute);
	}
}
