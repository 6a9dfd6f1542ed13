import type {
	ICredentialDataDecryptedObject,
	ICredentialTestRequest,
	ICredentialType,
	IHttpRequestOptions,
	Icon,
	INodeProperties,
} from 'n8n-workflow';

import { signedWith, tokenFor } from '../nodes/shared/jwt';

export class PythonBridgeApi implements ICredentialType {
	name = 'pythonBridgeApi';

	displayName = 'Python Bridge API';

	icon: Icon = {
		light: 'file:../icons/pythonBridge.svg',
		dark: 'file:../icons/pythonBridge.dark.svg',
	};

	documentationUrl =
		'https://github.com/n8n-bridge/n8n-bridge/blob/main/n8n-nodes/README.md#credentials';

	properties: INodeProperties[] = [
		{
			displayName: 'Base URL',
			name: 'baseUrl',
			type: 'string',
			default: 'http://localhost:8080',
			placeholder: 'http://n8n-bridge:8080',
			description: 'Where the bridge answers (behind HAProxy: the load balancer)',
			required: true,
		},
		{
			displayName: 'Authentication',
			name: 'authentication',
			type: 'options',
			options: [
				{
					name: 'API Key',
					value: 'apiKey',
					description: 'One of BRIDGE_API_KEYS, sent as X-API-Key',
				},
				{
					name: 'JWT Signing Secret',
					value: 'jwtSecret',
					description:
						'BRIDGE_JWT_SECRET: a short-lived token is minted for each request, limited to the workflow that sends it',
				},
				{
					name: 'Bearer Token',
					value: 'bearerToken',
					description: 'A token made with n8n-bridge token',
				},
			],
			default: 'jwtSecret',
		},
		{
			displayName: 'API Key',
			name: 'apiKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			displayOptions: { show: { authentication: ['apiKey'] } },
		},
		{
			displayName: 'JWT Secret',
			name: 'jwtSecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'The bridge’s BRIDGE_JWT_SECRET (32 bytes or more)',
			displayOptions: { show: { authentication: ['jwtSecret'] } },
		},
		{
			displayName: 'Audience',
			name: 'audience',
			type: 'string',
			default: 'n8n-bridge',
			description: 'The aud claim the bridge expects (BRIDGE_JWT_AUDIENCE)',
			displayOptions: { show: { authentication: ['jwtSecret'] } },
		},
		{
			displayName: 'Issuer',
			name: 'issuer',
			type: 'string',
			default: 'n8n-bridge',
			description: 'The iss claim the bridge expects (BRIDGE_JWT_ISSUER)',
			displayOptions: { show: { authentication: ['jwtSecret'] } },
		},
		{
			displayName: 'Token',
			name: 'token',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			displayOptions: { show: { authentication: ['bearerToken'] } },
		},
		{
			displayName: 'Callback Secret',
			name: 'callbackSecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			placeholder: 'whsec_…',
			description:
				'The bridge’s BRIDGE_CALLBACK_SECRET. When set, callbacks and event webhooks without a valid signature are refused.',
		},
	];

	authenticate = async (
		credentials: ICredentialDataDecryptedObject,
		requestOptions: IHttpRequestOptions,
	): Promise<IHttpRequestOptions> => {
		const headers = { ...(requestOptions.headers ?? {}) };
		const method = credentials.authentication as string;
		if (method === 'apiKey') {
			headers['X-API-Key'] = credentials.apiKey as string;
		} else if (method === 'bearerToken') {
			headers.Authorization = `Bearer ${credentials.token as string}`;
		} else {
			// The nodes mint their token for the workflow they run in and send it along (only
			// their own code knows the workflow). Any other request signed with this credential —
			// its test, or the HTTP Request node using it — gets a token that reaches no workflow.
			const presented = String(headers.Authorization ?? '').replace(/^Bearer /, '');
			if (!signedWith(credentials.jwtSecret as string, presented)) {
				headers.Authorization = `Bearer ${tokenFor(credentials, requestOptions.url, [])}`;
			}
		}
		return { ...requestOptions, headers };
	};

	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.baseUrl.replace(/\\/$/, "")}}',
			url: '/api/v1/processors',
		},
	};
}
