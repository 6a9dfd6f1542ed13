import { defineConfig } from 'vitest/config';

export default defineConfig({
	// n8n-workflow ships source maps pointing at sources it does not ship, and Vite warns once per
	// file (120 lines); its warnings say nothing about this package's tests.
	logLevel: 'error',
	test: { dir: 'test' },
});
