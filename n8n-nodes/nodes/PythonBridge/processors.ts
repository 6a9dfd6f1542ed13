import type {
	FieldType,
	IDataObject,
	IExecuteFunctions,
	ILoadOptionsFunctions,
	INodePropertyOptions,
	ResourceMapperField,
	ResourceMapperFields,
} from 'n8n-workflow';
import { NodeOperationError, jsonParse } from 'n8n-workflow';

import { bridgeRequest } from '../shared/transport';

interface JsonSchema {
	type?: string | string[];
	description?: string;
	title?: string;
	enum?: unknown[];
	default?: unknown;
	anyOf?: JsonSchema[];
	properties?: Record<string, JsonSchema>;
	required?: string[];
}

interface ProcessorInfo {
	name: string;
	description: string;
	parameters: JsonSchema;
}

async function processors(context: ILoadOptionsFunctions): Promise<ProcessorInfo[]> {
	const { body } = await bridgeRequest<{ processors: ProcessorInfo[] }>(
		context,
		'GET',
		'/api/v1/processors',
	);
	return body.processors;
}

export async function getProcessors(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	return (await processors(this)).map((p) => ({
		name: p.name,
		value: p.name,
		description: p.description,
	}));
}

const SIMPLE_TYPES: Record<string, FieldType> = {
	string: 'string',
	integer: 'number',
	number: 'number',
	boolean: 'boolean',
};

/** One field per top-level parameter of a simple type (string, number, boolean, enum). */
export function fieldsOf(schema: JsonSchema): ResourceMapperField[] {
	const required = new Set(schema.required ?? []);
	const fields: ResourceMapperField[] = [];
	for (const [name, property] of Object.entries(schema.properties ?? {})) {
		const variants = property.anyOf ?? [property];
		const simple = variants.find((v) => typeof v.type === 'string' && v.type in SIMPLE_TYPES);
		if (!simple || variants.some((v) => v.type === 'object' || v.type === 'array')) continue;
		const options = simple.enum?.map((value) => ({ name: String(value), value: value as string }));
		fields.push({
			id: name,
			displayName: property.title ?? name,
			required: required.has(name),
			defaultMatch: false,
			display: true,
			type: options ? 'options' : SIMPLE_TYPES[simple.type as string],
			options,
			canBeUsedToMatch: false,
		});
	}
	return fields;
}

export async function getProcessorFields(
	this: ILoadOptionsFunctions,
): Promise<ResourceMapperFields> {
	const name = this.getNodeParameter('processingType', '') as string;
	const processor = (await processors(this)).find((p) => p.name === name);
	return { fields: processor ? fieldsOf(processor.parameters) : [] };
}

/** The request's `parameters`: the JSON, with the fields' values over it (empty ones left out). */
export function parametersFor(context: IExecuteFunctions, itemIndex: number): IDataObject {
	const raw = context.getNodeParameter('parametersJson', itemIndex, '{}') as string | IDataObject;
	let parameters: IDataObject;
	try {
		parameters = typeof raw === 'string' ? jsonParse<IDataObject>(raw || '{}') : { ...raw };
	} catch (error) {
		throw new NodeOperationError(context.getNode(), 'Parameters (JSON) is not valid JSON', {
			description: (error as Error).message,
			itemIndex,
		});
	}
	if (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters)) {
		throw new NodeOperationError(context.getNode(), 'Parameters (JSON) must be a JSON object', {
			itemIndex,
		});
	}
	const mapped = context.getNodeParameter(
		'processorFields.value',
		itemIndex,
		{},
	) as IDataObject | null;
	for (const [key, value] of Object.entries(mapped ?? {})) {
		if (value !== null && value !== undefined && value !== '') parameters[key] = value;
	}
	return parameters;
}
