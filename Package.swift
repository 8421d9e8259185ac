// swift-tools-version:6.2
import PackageDescription

// Warnings are errors in every target of this package (not in dependencies): CI's gate is the
// same as a developer's build.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

// The I/O loop's state (AMQP) is touched by one thread only, its loop's; in a release build its
// dynamic exclusivity checks cost about 3% of a delivery's CPU (a thread-local access-set
// insertion per property access). Debug builds, which the tests run, keep them.
let loop: [SwiftSetting] = strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// The commit `warren version` prints: WARREN_GIT_COMMIT from the build's environment
// (scripts/install.sh sets it; the Dockerfile passes it, since its build context has no .git),
// else the checkout's own. SwiftPM caches this manifest's result until the manifest or the
// environment changes, so a plain `swift build` after a new commit can name the previous one.
let buildCommit: String = {
    if let given = Context.environment["WARREN_GIT_COMMIT"], !given.isEmpty {
        return String(given.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }.prefix(64))
    }
    guard let git = Context.gitInformation else { return "" }
    return String(git.currentCommit.prefix(12)) + (git.hasUncommittedChanges ? "-dirty" : "")
}()

let package = Package(
    name: "warren",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "warren", targets: ["warren"]),
        .library(name: "AMQP", targets: ["AMQP"]),
        // The example handler plugins (Examples/plugins/), shared libraries that warren loads.
        .library(name: "WarrenDemoPluginC", type: .dynamic, targets: ["WarrenDemoPluginC"]),
        .library(name: "WarrenDemoPluginSwift", type: .dynamic, targets: ["WarrenDemoPluginSwift"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // Already in the graph through async-http-client; named for NIOPosix's NIOThreadPool,
        // the HTTP handler's types and the tests' HTTP server.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        // Metrics API for the library code; the Prometheus backend is chosen by the executable.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // The W3C trace context vocabulary (trace and span ids, flags):
        // deliveries carry `traceparent`/`tracestate` forward (docs/tracing.md).
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context.git", from: "1.0.0"),
    ],
    targets: [
        // librabbitmq 0.11 from Debian's librabbitmq-dev, found through pkg-config.
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        // What Swift cannot call directly: the variadic amqp_login_with_properties, plus the
        // eventfd/poll/socket-option helpers of the I/O loop, and the OpenSSL error classification for TLS.
        .target(
            name: "CRabbitMQShims",
            dependencies: ["CRabbitMQ"],
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])],
            // The OpenSSL that librabbitmq itself links (libssl-dev comes with librabbitmq-dev):
            // its error queue explains TLS failures, and its SSL_CTX takes the TLS 1.2 minimum.
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // posix_spawn for `exec` handlers, with the glibc file actions (closefrom, chdir) Swift
        // does not import, and pidfd_open.
        .target(
            name: "CSpawn",
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])]
        ),
        // The commit the binary was built from, as a C string defined for one file.
        .target(
            name: "WarrenBuildInfo",
            cSettings: [.define("WARREN_GIT_COMMIT", to: "\"\(buildCommit)\"")]
        ),
        // The public C header of in-process handler plugins (warren_plugin.h).
        .target(name: "WarrenPlugin"),
        .target(
            name: "AMQP",
            dependencies: [
                "CRabbitMQ",
                "CRabbitMQShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: loop
        ),
        .target(
            name: "WarrenCore",
            dependencies: [
                "AMQP",
                "CSpawn",
                "WarrenPlugin",
                "WarrenBuildInfo",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "warren",
            dependencies: [
                "WarrenCore",
                "AMQP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // The example plugins: built by `swift build` and loaded by the tests. No test target
        // depends on them (that would link them into the test binary).
        .target(
            name: "WarrenDemoPluginC",
            dependencies: ["WarrenPlugin"],
            path: "Examples/plugins/c",
            // No headers of its own: it only implements warren_plugin.h.
            publicHeadersPath: ".",
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])]
        ),
        .target(
            name: "WarrenDemoPluginSwift",
            dependencies: ["WarrenPlugin"],
            path: "Examples/plugins/swift",
            swiftSettings: strict
        ),
        // Throughput of the AMQP layer alone (publish with confirms, consume + ack). Not a test.
        .executableTarget(
            name: "amqp-bench",
            dependencies: [
                "AMQP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/AMQPBench",
            swiftSettings: strict
        ),
        // Test helpers shared by the test targets.
        .target(
            name: "TestSupport",
            // CSpawn: children that inherit no descriptor (Spawn.swift).
            dependencies: ["CSpawn", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "AMQPTests",
            dependencies: ["AMQP", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "WarrenCoreTests",
            dependencies: [
                "WarrenCore", "TestSupport", "AMQP",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The command line's own decisions (exit statuses), with the executable imported.
        .testTarget(
            name: "WarrenCLITests",
            dependencies: ["warren", "WarrenCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "AMQP",
                "WarrenCore",
                "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                // A real HTTP server for the webhook handler's tests.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // /metrics, /healthz and /readyz fetched from the running binary.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
    ]
)
