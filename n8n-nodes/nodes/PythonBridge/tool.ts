import type { INodeProperties } from 'n8n-workflow';

/**
 * What the node's AI-agent tool variant (`…pythonBridgeTool`, made by n8n from `usableAsTool`)
 * shows differently from the node itself. n8n builds the variant from this node's own description
 * both in the editor and when a workflow runs (it applies `usableAsTool.replacements` only to the
 * editor's listing), so the differences are properties shown only when `@tool` is true: n8n's
 * display condition for "this is the tool variant", known to n8n 1.x and 2.x alike.
 */

export const TOOL_DESCRIPTION =
	'Runs a Python processor of n8n-bridge and returns the items it puts out. ' +
	'Input: `processor`, the name of the processor to run, and `parameters`, that processor’s ' +
	'parameters as JSON text (`{}` when it takes none). The processor runs on one item that ' +
	'holds this input. A failure comes back as `{message, error: {code, …}}`.';

/** The tool variant's own description for the model; a property of that name replaces n8n's
 * generic "Tool Description" pair (auto/manual), whose automatic text is the node's subtitle. */
const toolDescription: INodeProperties = {
	displayName: 'Description',
	name: 'toolDescription',
	type: 'string',
	default: TOOL_DESCRIPTION,
	required: true,
	typeOptions: { rows: 3 },
	description:
		'Explain to the model what this tool does and what to give it; name the processor and its parameters if you fix them below',
	displayOptions: { show: { '@tool': [true] } },
};

/** In the tool, the model chooses the processor and its parameters unless the user fixes them.
 * The parameters are JSON text: n8n 2.x refuses an empty object for a `json` input, and many
 * processors take no parameters. */
const MODEL_DEFAULTS: Record<string, string> = {
	processingType:
		"={{ $fromAI('processor', 'The name of the n8n-bridge processor to run', 'string') }}",
	parametersJson:
		"={{ $fromAI('parameters', 'The processor’s parameters as JSON text, {} for none', 'string') }}",
};

function shownOnlyWhen(property: INodeProperties, tool: boolean): INodeProperties {
	const { displayOptions } = property;
	return {
		...property,
		displayOptions: { ...displayOptions, show: { ...displayOptions?.show, '@tool': [tool] } },
	};
}

/** The node's properties: the tool's description first, and each property that has a model
 * default twice — as it is for the node, with the model's default for the tool. */
export function withToolVariant(properties: INodeProperties[]): INodeProperties[] {
	return [
		toolDescription,
		...properties.flatMap((property) =>
			property.name in MODEL_DEFAULTS
				? [
						shownOnlyWhen(property, false),
						shownOnlyWhen({ ...property, default: MODEL_DEFAULTS[property.name] }, true),
					]
				: [property],
		),
	];
}
