import AMQP
import Foundation
import TestSupport
import Testing

@testable import WarrenCore

/// `inherit_env` for pipe workers: which of warren's variables the worker process sees.
extension PipeHandlerTests {
    /// Answers every request with its own environment as the reply (a JSON object).
    static let environmentWorker: String = {
        let source = #"""
            import json, os, sys
            stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
            while True:
                line = stdin.readline()
                if not line:
                    break
                request = json.loads(line)
                stdin.read(request["body_length"])
                answer = {"id": request["id"], "verdict": "ack", "reply": json.dumps(dict(os.environ))}
                stdout.write(json.dumps(answer).encode() + b"\n")
                stdout.flush()
            """#
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("warren-pipe-env-worker-\(getpid()).py").path
        let written = FileManager.default.createFile(atPath: path, contents: Data(source.utf8))
        precondition(written, "cannot write the test worker to \(path)")
        return path
    }()

    func workerEnvironment(_ inherit: InheritedEnvironment) async throws -> [String: String] {
        var settings = W.settings(Self.environmentWorker, name: "envworker")
        settings.inherit = inherit
        settings.environment = ["CONFIGURED": "yes"]
        var warrens = ProcessInfo.processInfo.environment
        warrens["AMQP_PASSWORD"] = "s3cret"
        warrens["KEEP_ME"] = "kept"
        warrens["TZ"] = "Europe/Warren-Test"
        settings.inheritedEnvironment = warrens
        let handler = PipeHandler(settings: settings, logger: CapturedLog().logger())
        return try await W.withRunning(handler) {
            try #require(W.reply(await handler.handle(W.input()))).compactMapValues { $0 as? String }
        }
    }

    @Test func aPipeWorkerSeesTheStandardVariablesButNotWarrensSecretsByDefault() async throws {
        let seen = try await workerEnvironment(.standard)
        // Not PATH: a python3 that is a pyenv shim rewrites it before the worker starts.
        #expect(seen["TZ"] == "Europe/Warren-Test", "TZ is in the standard list")
        #expect(seen["AMQP_PASSWORD"] == nil, "a secret in warren's environment reached the worker")
        #expect(seen["KEEP_ME"] == nil)
        #expect(seen["CONFIGURED"] == "yes")
        #expect(seen["WARREN_HANDLER"] == "envworker")
        #expect(seen["WARREN_WORKER"] == "0")
    }

    @Test func aPipeWorkerSeesExactlyTheListedVariables() async throws {
        let seen = try await workerEnvironment(.only(["KEEP_ME"]))
        #expect(seen["KEEP_ME"] == "kept")
        #expect(seen["TZ"] == nil, "only the listed variables; python3 was still found, on warren's own PATH")
        #expect(seen["AMQP_PASSWORD"] == nil)
        #expect(seen["CONFIGURED"] == "yes")
    }
}
