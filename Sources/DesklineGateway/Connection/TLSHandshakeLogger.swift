import Logging
import NIOCore
import NIOTLS

/// Logs why a TLS handshake failed (plaintext sent to the TLS port, a too old TLS version, a port
/// scanner), then steps out of the pipeline once a handshake succeeds. The error itself goes on to
/// the session, which closes that connection; nothing else is affected.
final class TLSHandshakeLogger: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let remote = context.channel.remoteAddress.map { "\($0)" } ?? "unknown"
        logger.info("TLS handshake failed", metadata: ["remote": "\(remote)", "error": "\(error)"])
        context.fireErrorCaught(error)
    }
}
