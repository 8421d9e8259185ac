import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// Turns a transport error of a webhook request into the words that go into logs and the
/// `x-warren-error` dead-letter header: `connection refused by 127.0.0.1:8080`.
///
/// The text names only `host:port`, never the URL: a webhook URL may carry credentials
/// (`https://user:pass@…`) or a token in its query. Error descriptions that could echo request
/// data (AsyncHTTPClient's invalid-header errors list the header values, which may be secrets)
/// are replaced by their fixed short form.
enum HTTPErrorText {
    static func describe(_ error: any Error, target: String) -> String {
        switch error {
        case let error as NIOConnectionError:
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return "could not resolve \(error.host)"
            }
            if let first = error.connectionErrors.first {
                return describeConnect(first.error, target: target)
            }
            return "could not connect to \(target)"
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout: return "connection to \(target) timed out"
            case .remoteConnectionClosed: return "connection closed by \(target) before a complete response"
            case .tlsHandshakeTimeout: return "TLS handshake with \(target) timed out"
            // `shortDescription` carries no associated values (header values, URLs).
            default: return "request to \(target) failed: \(error.shortDescription.lowercased())"
            }
        case is IOError, is ChannelError:
            return describeConnect(error, target: target)
        default:
            return "request to \(target) failed: \(error)"
        }
    }

    /// One failed connection attempt, by errno where it says something an operator acts on.
    private static func describeConnect(_ error: any Error, target: String) -> String {
        if let error = error as? ChannelError, case .connectTimeout = error {
            return "connection to \(target) timed out"
        }
        guard let error = error as? IOError else {
            return "could not connect to \(target): \(error)"
        }
        switch error.errnoCode {
        case ECONNREFUSED: return "connection refused by \(target)"
        case ECONNRESET: return "connection reset by \(target)"
        case ETIMEDOUT: return "connection to \(target) timed out"
        case EHOSTUNREACH, ENETUNREACH: return "\(target) is unreachable"
        default: return "could not connect to \(target): \(String(cString: strerror(error.errnoCode)).lowercased())"
        }
    }
}
