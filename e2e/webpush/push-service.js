// A real Web Push service for Herald's tests: web-push-testing's server (it decrypts RFC 8291
// aes128gcm payloads and checks RFC 8292 VAPID signatures), bound to 127.0.0.1 on a port
// the kernel picks instead of its CLI's fixed 8090 on every interface. Prints
// {"port": N} once listening; exits when its stdin closes (the test that started it is gone).
const Server = require('web-push-testing/src/server.js');
const {PushApiModel} = require('web-push-testing/src/PushApiModel.js');

const model = new PushApiModel();
const server = new Server(model, 0);
const listen = server._app.listen.bind(server._app);
server._app.listen = (port, ready) => {
	const http = listen(port, '127.0.0.1', () => {
		const {port: bound} = http.address();
		model.notifyUrl = `http://127.0.0.1:${bound}/notify/`;
		console.log(JSON.stringify({port: bound}));
		if (ready) {
			ready();
		}
	});
	return http;
};
server.startServer();
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
