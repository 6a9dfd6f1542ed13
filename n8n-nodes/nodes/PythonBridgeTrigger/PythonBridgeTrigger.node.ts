import type {
	IDataObject,
	IHookFunctions,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes } from 'n8n-workflow';

import { refusedUnsigned } from '../shared/signature';
import { bridgeRequest } from '../shared/transport';

const EVENTS = [
	{ name: 'Job Queued', value: 'workflow.queued' },
	{ name: 'Job Started', value: 'workflow.started' },
	{ name: 'Job Completed', value: 'workflow.completed' },
	{ name: 'Job Failed', value: 'workflow.failed' },
	{ name: 'Job Cancelled', value: 'workflow.cancelled' },
	{ name: 'Callback Delivered', value: 'callback.delivered' },
	{ name: 'Callback Failed', value: 'callback.failed' },
	{ name: 'Queue Threshold Crossed', value: 'queue.threshold' },
	{ name: 'Backend Down (Redis Unreachable)', value: 'backend.down' },
	{ name: 'Backend Up Again', value: 'backend.up' },
];

interface Subscription {
	id: string;
	url: string;
	events: string[];
}

export class PythonBridgeTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Python Bridge Trigger',
		name: 'pythonBridgeTrigger',
		icon: {
			light: 'file:../../icons/pythonBridge.svg',
			dark: 'file:../../icons/pythonBridge.dark.svg',
		},
		group: ['trigger'],
		version: [1],
		subtitle: '={{ $parameter["events"].join(", ") }}',
		description: 'Starts the workflow when the Python bridge reports an event',
		defaults: { name: 'Python Bridge Trigger' },
		inputs: [],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'pythonBridgeApi', required: true }],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				responseMode: 'onReceived',
				path: 'python-bridge',
			},
		],
		properties: [
			{
				displayName: 'Events',
				name: 'events',
				type: 'multiOptions',
				options: EVENTS,
				required: true,
				default: ['workflow.failed'],
				description: 'The bridge events that start this workflow',
			},
			{
				displayName: 'Only for Workflow ID',
				name: 'workflowId',
				type: 'string',
				default: '',
				description:
					'Only events of jobs sent by this workflow (empty: every workflow the credential reaches). With a JWT Signing Secret credential the node reaches only the workflow it is in; to watch others, use a Bearer Token or API Key credential.',
			},
		],
	};

	webhookMethods = {
		default: {
			async checkExists(this: IHookFunctions): Promise<boolean> {
				const data = this.getWorkflowStaticData('node');
				if (!data.subscriptionId) return false;
				const { status, body } = await bridgeRequest<Subscription>(
					this,
					'GET',
					`/api/v1/subscriptions/${data.subscriptionId as string}`,
					undefined,
					{ allow: [404] },
				);
				if (status === 404 || body.url !== this.getNodeWebhookUrl('default')) {
					delete data.subscriptionId;
					return false;
				}
				return true;
			},
			async create(this: IHookFunctions): Promise<boolean> {
				const workflowId = (this.getNodeParameter('workflowId', '') as string).trim();
				const request: IDataObject = {
					url: this.getNodeWebhookUrl('default') as string,
					events: this.getNodeParameter('events', []) as string[],
					description: `n8n workflow ${this.getWorkflow().id}, node ${this.getNode().name}`,
				};
				if (workflowId) request.workflow_id = workflowId;
				const { body } = await bridgeRequest<Subscription>(
					this,
					'POST',
					'/api/v1/subscriptions',
					request,
				);
				this.getWorkflowStaticData('node').subscriptionId = body.id;
				return true;
			},
			async delete(this: IHookFunctions): Promise<boolean> {
				const data = this.getWorkflowStaticData('node');
				if (data.subscriptionId) {
					await bridgeRequest(
						this,
						'DELETE',
						`/api/v1/subscriptions/${data.subscriptionId as string}`,
						undefined,
						{ allow: [404] },
					);
					delete data.subscriptionId;
				}
				return true;
			},
		},
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		if (await refusedUnsigned(this)) return { noWebhookResponse: true };
		const event = this.getRequestObject().body as IDataObject;
		return { workflowData: [this.helpers.returnJsonArray(event)] };
	}
}
