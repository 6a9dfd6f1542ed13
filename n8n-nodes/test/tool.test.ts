import { assert, describe, it } from 'vitest';

import type { INode, INodeParameters, INodeTypeDescription } from 'n8n-workflow';
import { NodeHelpers } from 'n8n-workflow';

import { PythonBridge } from '../nodes/PythonBridge/PythonBridge.node';
import { TOOL_DESCRIPTION } from '../nodes/PythonBridge/tool';

/** The parameters n8n fills in for a new node of the node's type or of its tool variant (n8n
 * names the variant `<name>Tool`, and its `@tool` display condition looks at that name). */
function defaults(tool: boolean): INodeParameters {
	const base = new PythonBridge().description;
	const description: INodeTypeDescription = {
		...base,
		name: `CUSTOM.pythonBridge${tool ? 'Tool' : ''}`,
	};
	const node: INode = {
		id: 'n1',
		name: 'Python Bridge',
		type: description.name,
		typeVersion: 1,
		position: [0, 0],
		parameters: {},
	};
	const parameters = NodeHelpers.getNodeParameters(
		description.properties,
		{},
		true,
		false,
		node,
		description,
	);
	assert.isNotNull(parameters);
	return parameters as INodeParameters;
}

describe('the AI-agent tool variant', () => {
	it('describes itself to the model, and the model chooses the processor and its parameters', () => {
		const tool = defaults(true);
		assert.equal(tool.toolDescription, TOOL_DESCRIPTION);
		assert.notProperty(tool, 'descriptionType');
		assert.equal(tool.operation, 'execute');
		assert.match(String(tool.processingType), /^=\{\{ \$fromAI\('processor', /);
		assert.match(String(tool.parametersJson), /^=\{\{ \$fromAI\('parameters', .*'string'\) \}\}$/);
	});

	it('leaves the node itself as it is', () => {
		const node = defaults(false);
		assert.notProperty(node, 'toolDescription');
		assert.equal(node.processingType, '');
		assert.equal(node.parametersJson, '{}');
	});
});
