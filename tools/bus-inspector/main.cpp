// bus-inspector: see what shmbus objects live on this host, watch them,
// and clean up what dead processes left behind.
//
//   bus-inspector list [--json]            every shmbus object
//   bus-inspector show NAME [--json]       one object: header, processes, stats;
//                                          BUS shows its registry, BUS/OBJECT an object,
//                                          BRIDGE.bridge a bus-bridge (peer, link, channels)
//   bus-inspector watch [PREFIX]           live view with rates; q or Ctrl-C quits
//   bus-inspector gc [--dry-run] [--force]  unlink objects whose processes all died
//                                          (an open bus keeps its objects)
//   bus-inspector doctor [--json]          find leaked, corrupted, stuck objects
//
// Exit codes: 0 ok, 1 no such object, 2 usage, 3 invalid segment,
// 4 doctor found problems.
//
// It reads segments read-only and never attaches, so inspecting never
// blocks or slows the processes that use them.
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "shmbus/shmbus.hpp"
#include "shmbus/store_files.hpp"
#include "shmbus/store_stats.hpp"
#ifdef SHMBUS_INSPECTOR_BRIDGE
#include "shmbus/bridge/status.hpp"
#endif

namespace {

using nlohmann::json;
// Names and type names come from /dev/shm and from shared memory: bytes
// that are not UTF-8 print as U+FFFD rather than throw from dump().
constexpr int kIndent = 2;
constexpr auto kNotUtf8 = json::error_handler_t::replace;
using shmbus::Errc;

enum Exit : int { kOk = 0, kNotFound = 1, kUsage = 2, kInvalid = 3, kProblems = 4 };

std::string kind_name(const shmbus::SegmentInfo& info) {
  return info.kind ? std::string(shmbus::to_string(*info.kind))
                   : "unknown(" + std::to_string(info.raw_kind) + ")";
}

std::string human_size(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string iso_time(std::uint64_t unix_ns) {
  std::time_t t = static_cast<std::time_t>(unix_ns / 1'000'000'000ULL);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json process_json(const shmbus::ProcessId& id, bool alive) {
  return {{"pid", id.pid}, {"start_time", id.start_time}, {"alive", alive}};
}

json info_json(const shmbus::SegmentInfo& info) {
  json j{{"name", info.name},
         {"kind", kind_name(info)},
         {"type", info.type_name},
         {"state", info.state},
         {"total_size", info.total_size},
         {"payload_size", info.payload_size},
         {"creator", process_json(info.creator, info.creator_alive)},
         {"created", info.created_unix_ns ? iso_time(info.created_unix_ns) : ""},
         {"abandoned", info.state != "initialising" && info.abandoned()}};
  json attached = json::array();
  for (const auto& p : info.attached) attached.push_back(process_json(p.id, p.alive));
  j["attached"] = attached;
  return j;
}

json stats_json(const shmbus::ObjectStats& stats) {
  json counters = json::object(), gauges = json::object();
  for (const auto& [k, v] : stats.counters) counters[k] = v;
  for (const auto& [k, v] : stats.gauges) gauges[k] = v;
  return {{"counters", counters}, {"gauges", gauges}, {"problems", stats.problems}};
}

// The statistics of any object; a bridge's from its status segment.
shmbus::ObjectStats stats_of(const shmbus::SegmentView& view) {
#ifdef SHMBUS_INSPECTOR_BRIDGE
  if (view.info().kind == shmbus::ObjectKind::bridge)
    return shmbus::bridge::bridge_object_stats(view);
#endif
  return shmbus::object_stats(view);
}

#ifdef SHMBUS_INSPECTOR_BRIDGE
json bridge_json(const shmbus::bridge::BridgeStatus& s) {
  json channels = json::array();
  for (const auto& c : s.channels)
    channels.push_back({{"name", c.name},
                        {"direction", c.outbound ? "out" : "in"},
                        {"kind", c.topic ? "topic" : "queue"},
                        {"messages", c.messages},
                        {"acked", c.acked},
                        {"in_flight", c.in_flight},
                        {"retransmitted", c.retransmitted},
                        {"missed", c.missed},
                        {"duplicates", c.duplicates},
                        {"gaps", c.gaps},
                        {"full_waits", c.full_waits},
                        {"take_interrupted", c.take_interrupted},
                        {"apply_uncertain", c.apply_uncertain}});
  return {{"name", s.name},
          {"alive", s.alive},
          {"link", std::string(shmbus::bridge::to_string(s.link))},
          {"peer", s.peer},
          {"links", s.links},
          {"last_rx", s.last_rx_ns ? iso_time(s.last_rx_ns) : ""},
          {"updated", s.updated_ns ? iso_time(s.updated_ns) : ""},
          {"channels", channels}};
}

void print_bridge(const shmbus::bridge::BridgeStatus& s) {
  std::printf("bridge:    %s (pid %d, %s)\n", s.name.c_str(), static_cast<int>(s.process.pid),
              s.alive ? "alive" : "dead: stale status");
  std::printf("link:      %s, peer %s (%llu link(s) so far)\n",
              std::string(shmbus::bridge::to_string(s.link)).c_str(),
              s.peer.empty() ? "not known yet" : s.peer.c_str(),
              static_cast<unsigned long long>(s.links));
  if (s.last_rx_ns != 0 && s.updated_ns >= s.last_rx_ns)
    std::printf("last rx:   %.1f ms before the last update (%s)\n",
                static_cast<double>(s.updated_ns - s.last_rx_ns) / 1e6,
                iso_time(s.updated_ns).c_str());
  std::printf("%-4s %-6s %-24s %12s %12s %9s %8s %8s\n", "DIR", "KIND", "CHANNEL", "MESSAGES",
              "ACKED", "BACKLOG", "RESENT", "LOST");
  for (const auto& c : s.channels) {
    // LOST: a lossy subscription's missed (out), a topic's gaps (in).
    const std::uint64_t lost = c.outbound ? c.missed : c.gaps;
    if (c.outbound)
      std::printf(
          "%-4s %-6s %-24s %12llu %12llu %9llu %8llu %8llu\n", "out", c.topic ? "topic" : "queue",
          c.name.c_str(), static_cast<unsigned long long>(c.messages),
          static_cast<unsigned long long>(c.acked), static_cast<unsigned long long>(c.in_flight),
          static_cast<unsigned long long>(c.retransmitted), static_cast<unsigned long long>(lost));
    else
      std::printf("%-4s %-6s %-24s %12llu %12s %9s %8s %8llu   (duplicates dropped %llu)\n", "in",
                  c.topic ? "topic" : "queue", c.name.c_str(),
                  static_cast<unsigned long long>(c.messages), "-", "-", "-",
                  static_cast<unsigned long long>(lost),
                  static_cast<unsigned long long>(c.duplicates));
  }
}
#endif

std::size_t live_count(const shmbus::SegmentInfo& info) {
  std::size_t n = 0;
  for (const auto& p : info.attached) n += p.alive ? 1 : 0;
  return n;
}

int cmd_list(bool as_json) {
  json out = json::array();
  if (!as_json) {
    std::printf("%-32s %-16s %-12s %10s %-8s %s\n", "NAME", "KIND", "STATE", "SIZE", "CREATOR",
                "ATTACHED (live/all)");
  }
  for (const auto& name : shmbus::list_segments()) {
    try {
      auto info = shmbus::inspect_segment(name);
      if (as_json) {
        out.push_back(info_json(info));
      } else {
        std::printf("%-32s %-16s %-12s %10s %-8d %zu/%zu%s\n", name.c_str(),
                    kind_name(info).c_str(), info.state.c_str(),
                    human_size(info.total_size).c_str(), static_cast<int>(info.creator.pid),
                    live_count(info), info.attached.size(),
                    info.state != "initialising" && info.abandoned() ? "  (abandoned)" : "");
      }
    } catch (const shmbus::Error& e) {
      if (e.code() == Errc::not_found) continue;  // removed while we listed
      if (as_json) {
        out.push_back({{"name", name},
                       {"error", std::string(shmbus::to_string(e.code()))},
                       {"reason", e.reason()}});
      } else {
        std::printf("%-32s %-16s %s\n", name.c_str(), "INVALID", e.reason().c_str());
      }
    }
  }
  if (as_json) std::cout << out.dump(kIndent, ' ', false, kNotUtf8) << "\n";
  return kOk;
}

int report_error(const shmbus::Error& e, bool as_json) {
  if (as_json) {
    std::cout << json{{"name", e.object()},
                      {"error", std::string(shmbus::to_string(e.code()))},
                      {"reason", e.reason()}}
                     .dump(kIndent, ' ', false, kNotUtf8)
              << "\n";
  }
  std::fprintf(stderr, "bus-inspector: %s\n", e.what());
  switch (e.code()) {
    case Errc::not_found:
      return kNotFound;
    case Errc::invalid_name:
      return kUsage;
    default:
      return kInvalid;
  }
}

json bus_objects_json(const shmbus::SegmentView& view) {
  json objects = json::array();
  for (const auto& o : shmbus::Bus::list_objects(view)) {
    objects.push_back({{"name", o.name},
                       {"full_name", o.full_name},
                       {"kind", std::string(shmbus::to_string(o.kind))},
                       {"type", o.type_name},
                       {"capacity", o.capacity},
                       {"creator_pid", o.creator.pid},
                       {"created", iso_time(o.created_unix_ns)}});
  }
  return objects;
}

// A container's store (Dict, List, Namespace): not a segment.
int show_store(const std::string& name, bool as_json) {
  auto s = shmbus::inspect_store(name);
  if (as_json) {
    std::cout << json{{"name", s.name},
                      {"kind", s.kind},
                      {"key_type", s.key_type},
                      {"value_type", s.value_type},
                      {"entries", s.entries},
                      {"file_bytes", s.file_bytes},
                      {"used_bytes", s.used_bytes},
                      {"holders", s.holders},
                      {"readers", s.readers},
                      {"writer", s.writer}}
                     .dump(kIndent, ' ', false, kNotUtf8)
              << "\n";
    return kOk;
  }
  auto pids = [](const std::vector<int>& v) {
    std::string out;
    for (int p : v) out += " " + std::to_string(p);
    return v.empty() ? std::string(" none") : out;
  };
  std::printf("name:      %s\n", s.name.c_str());
  std::printf("kind:      %s (store)\n", s.kind.c_str());
  std::printf("type:      %s -> %s\n", s.key_type.c_str(), s.value_type.c_str());
  std::printf("entries:   %llu\n", static_cast<unsigned long long>(s.entries));
  std::printf("size:      %s in use of %s reserved\n", human_size(s.used_bytes).c_str(),
              human_size(s.file_bytes).c_str());
  std::printf("open by:  %s\n", pids(s.holders).c_str());
  std::printf("readers:  %s\n", pids(s.readers).c_str());
  std::printf("writer:    %s\n", s.writer != 0 ? std::to_string(s.writer).c_str() : "none");
  return kOk;
}

int cmd_show(std::string name, bool as_json) {
  // BUS/OBJECT names the object "BUS.OBJECT".
  if (auto slash = name.find('/'); slash != std::string::npos) name[slash] = '.';
  try {
    if (::access(shmbus::store_path(name).c_str(), F_OK) == 0) return show_store(name, as_json);
    auto view = shmbus::SegmentView::open(name);
    const auto& info = view.info();
    auto stats = stats_of(view);
    const bool is_bus = info.kind == shmbus::ObjectKind::bus_registry;
#ifdef SHMBUS_INSPECTOR_BRIDGE
    std::optional<shmbus::bridge::BridgeStatus> bridge;
    if (info.kind == shmbus::ObjectKind::bridge) bridge = shmbus::bridge::read_status(view);
#endif
    if (as_json) {
      json j = info_json(info);
      j["stats"] = stats_json(stats);
      if (is_bus) j["objects"] = bus_objects_json(view);
#ifdef SHMBUS_INSPECTOR_BRIDGE
      if (bridge) j["bridge"] = bridge_json(*bridge);
#endif
      std::cout << j.dump(kIndent, ' ', false, kNotUtf8) << "\n";
      return kOk;
    }
#ifdef SHMBUS_INSPECTOR_BRIDGE
    if (bridge) {
      print_bridge(*bridge);
      return kOk;
    }
#endif
    std::printf("name:      %s\n", info.name.c_str());
    std::printf("kind:      %s\n", kind_name(info).c_str());
    std::printf("type:      %s\n", info.type_name.c_str());
    std::printf("state:     %s\n", info.state.c_str());
    std::printf("size:      %s (%llu bytes payload)\n", human_size(info.total_size).c_str(),
                static_cast<unsigned long long>(info.payload_size));
    std::printf("creator:   pid %d (%s)\n", static_cast<int>(info.creator.pid),
                info.creator_alive ? "alive" : "dead");
    if (info.created_unix_ns)
      std::printf("created:   %s\n", iso_time(info.created_unix_ns).c_str());
    std::printf("attached:  %zu process(es)\n", info.attached.size());
    for (const auto& p : info.attached) {
      std::printf("  pid %-8d %s\n", static_cast<int>(p.id.pid), p.alive ? "alive" : "dead");
    }
    for (const auto& [k, v] : stats.gauges)
      std::printf("%-10s %lld\n", (k + ":").c_str(), static_cast<long long>(v));
    for (const auto& [k, v] : stats.counters)
      std::printf("%-10s %llu\n", (k + ":").c_str(), static_cast<unsigned long long>(v));
    for (const auto& p : stats.problems) std::printf("problem:   %s\n", p.c_str());
    if (is_bus) {
      std::printf("objects:\n");
      for (const auto& o : shmbus::Bus::list_objects(view)) {
        std::printf("  %-24s %-16s %-20s capacity %llu\n", o.name.c_str(),
                    std::string(shmbus::to_string(o.kind)).c_str(), o.type_name.c_str(),
                    static_cast<unsigned long long>(o.capacity));
      }
    }
    return kOk;
  } catch (const shmbus::Error& e) {
    return report_error(e, as_json);
  }
}

int cmd_gc(bool dry_run, bool include_invalid, bool force, bool as_json) {
  shmbus::GcOptions options;
  options.dry_run = dry_run;
  options.include_invalid = include_invalid;
  options.force = force;
  auto actions = shmbus::collect_garbage(options);
  if (as_json) {
    json out = json::array();
    for (const auto& a : actions) {
      out.push_back({{"name", a.name}, {"reason", a.reason}, {"removed", a.removed}});
    }
    std::cout << json{{"dry_run", dry_run}, {"actions", out}}.dump(kIndent, ' ', false, kNotUtf8)
              << "\n";
    return kOk;
  }
  for (const auto& a : actions) {
    std::printf("%s %s: %s\n", dry_run ? "would remove" : (a.removed ? "removed" : "gone"),
                a.name.c_str(), a.reason.c_str());
  }
  std::printf("%zu object(s) %s\n", actions.size(), dry_run ? "to remove" : "removed");
  return kOk;
}

int cmd_doctor(bool as_json) {
  json findings = json::array();
  auto add = [&](const std::string& name, const std::string& problem, const std::string& advice) {
    findings.push_back({{"name", name}, {"problem", problem}, {"advice", advice}});
  };
  shmbus::GcOptions dry;
  dry.dry_run = true;
  for (const auto& a : shmbus::collect_garbage(dry)) {
    add(a.name, "leaked: " + a.reason, "run `bus-inspector gc` to unlink it");
  }
  for (const auto& name : shmbus::list_segments()) {
    try {
      auto view = shmbus::SegmentView::open(name);
      if (view.info().state == "initialising" && view.info().creator_alive) {
        add(name,
            "still initialising (creator pid " + std::to_string(view.info().creator.pid) +
                " alive)",
            "wait, or check that process");
        continue;
      }
      for (const auto& p : stats_of(view).problems) {
        add(name, p, "see `bus-inspector show " + name + "`");
      }
      if (view.info().keep && view.info().abandoned()) {
        add(name, "every process of it died; it holds data not yet handed on (gc keeps it)",
            "restart its owner (a bridge: the same --name and options), or `bus-inspector gc "
            "--force` to discard it");
        continue;
      }
      for (const auto& p : view.info().attached) {
        if (!p.alive && !view.info().abandoned()) {
          add(name, "attached process " + std::to_string(p.id.pid) + " died",
              "its peers see it as dead; its slot is reused by the next attacher");
          break;
        }
      }
    } catch (const shmbus::Error& e) {
      if (e.code() == Errc::not_found) continue;
      const bool version = e.code() == Errc::wrong_version;
      add(name, std::string(version ? "version mismatch: " : "invalid: ") + e.reason(),
          version
              ? "built by another shmbus version; stop its users or `bus-inspector gc --invalid`"
              : "`bus-inspector gc --invalid` unlinks it");
    }
  }
  if (as_json) {
    std::cout << json{{"healthy", findings.empty()}, {"findings", findings}}.dump(kIndent, ' ',
                                                                                  false, kNotUtf8)
              << "\n";
  } else if (findings.empty()) {
    std::printf("no problems found\n");
  } else {
    for (const auto& f : findings) {
      std::printf("%s: %s\n    -> %s\n", f["name"].get<std::string>().c_str(),
                  f["problem"].get<std::string>().c_str(), f["advice"].get<std::string>().c_str());
    }
  }
  return findings.empty() ? kOk : kProblems;
}

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

int cmd_watch(const std::string& prefix, double interval_s, int iterations) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (tty) {
    ::tcgetattr(STDIN_FILENO, &saved);
    termios raw = saved;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  }
  std::map<std::string, std::map<std::string, std::uint64_t>> last;
  auto last_time = std::chrono::steady_clock::now();
  for (int round = 0; !g_stop && (iterations <= 0 || round < iterations); ++round) {
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - last_time).count();
    last_time = now;
    std::string screen = "\033[H\033[2J";
    char line[512];
    std::snprintf(line, sizeof line, "shmbus %s — %s   (q or Ctrl-C quits)\n\n",
                  std::string(shmbus::version()).c_str(),
                  iso_time(static_cast<std::uint64_t>(
                               std::chrono::system_clock::now().time_since_epoch().count()))
                      .c_str());
    screen += line;
    std::snprintf(line, sizeof line, "%-28s %-14s %-6s %s\n", "NAME", "KIND", "LIVE",
                  "STATS (rate/s)");
    screen += line;
    std::map<std::string, std::map<std::string, std::uint64_t>> current;
    bool any = false;
    for (const auto& name : shmbus::list_segments()) {
      if (!name.starts_with(prefix)) continue;
      any = true;
      try {
        auto view = shmbus::SegmentView::open(name);
        auto stats = stats_of(view);
        std::string detail;
        for (const auto& [k, v] : stats.gauges) detail += k + "=" + std::to_string(v) + " ";
        for (const auto& [k, v] : stats.counters) {
          current[name][k] = v;
          auto it = last.find(name);
          if (round > 0 && it != last.end() && it->second.count(k) && dt > 0) {
            double rate = static_cast<double>(v - it->second[k]) / dt;
            char r[64];
            std::snprintf(r, sizeof r, "%s=%.0f/s ", k.c_str(), rate);
            detail += r;
          } else {
            detail += k + "=" + std::to_string(v) + " ";
          }
        }
        std::snprintf(line, sizeof line, "%-28s %-14s %zu/%-4zu %s\n", name.c_str(),
                      kind_name(view.info()).c_str(), live_count(view.info()),
                      view.info().attached.size(), detail.c_str());
      } catch (const shmbus::Error& e) {
        if (e.code() == Errc::not_found) continue;
        std::snprintf(line, sizeof line, "%-28s %-14s %s\n", name.c_str(), "INVALID",
                      e.reason().c_str());
      }
      screen += line;
    }
    if (!any) {  // say so, rather than an empty table that looks like a hang
      screen += prefix.empty() ? "(no shmbus objects on this host yet: waiting)\n"
                               : "(no object named " + prefix + "... yet: waiting)\n";
    }
    last = std::move(current);
    std::fputs(screen.c_str(), stdout);
    std::fflush(stdout);
    // Wait for the next refresh, a key, or a signal.
    const auto until = now + std::chrono::duration<double>(interval_s);
    while (!g_stop && std::chrono::steady_clock::now() < until) {
      pollfd pfd{STDIN_FILENO, POLLIN, 0};
      if (tty && ::poll(&pfd, 1, 50) > 0) {
        char c = 0;
        if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) g_stop = 1;
      } else if (!tty) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  if (tty) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  std::printf("\n");
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bus-inspector: inspect, watch and clean up shmbus objects on this host"};
  app.footer(
      "Examples:\n"
      "  bus-inspector list\n"
      "  bus-inspector show trading --json      (a bus: its registry)\n"
      "  bus-inspector show trading/orders      (one object of a bus)\n"
      "  bus-inspector watch orders.\n"
      "  bus-inspector gc --dry-run\n"
      "  bus-inspector doctor\n"
      "Exit codes: 0 ok, 1 no such object, 2 usage, 3 invalid segment, 4 problems found.");
  app.require_subcommand(1);
  bool as_json = false;

  auto* list = app.add_subcommand("list", "List every shmbus object on this host");
  list->add_flag("--json", as_json, "Print JSON");

  std::string name;
  auto* show = app.add_subcommand("show", "Show one object: header, processes, statistics");
  show->add_option("name", name, "Object name (without the shmbus. prefix)")->required();
  show->add_flag("--json", as_json, "Print JSON");

  std::string prefix;
  double interval = 1.0;
  int iterations = 0;
  auto* watch = app.add_subcommand("watch", "Live view of objects with rates per second");
  watch->add_option("prefix", prefix, "Only names starting with this");
  watch->add_option("--interval", interval, "Seconds between refreshes")
      ->check(CLI::PositiveNumber);
  watch->add_option("--iterations", iterations, "Stop after N refreshes (0: until q)");

  bool dry_run = false, include_invalid = false, force = false;
  auto* gc = app.add_subcommand(
      "gc", "Unlink objects whose every process is dead (an open bus keeps its objects)");
  gc->add_flag("--dry-run", dry_run, "Only say what would be removed");
  gc->add_flag("--invalid", include_invalid, "Also unlink files with an invalid header");
  gc->add_flag("--force", force,
               "Also unlink dead objects that hold data not yet handed on (a killed bridge's "
               "outbox and inboxes)");
  gc->add_flag("--json", as_json, "Print JSON");

  auto* doctor =
      app.add_subcommand("doctor", "Find leaked, corrupted, mismatched or stuck objects");
  doctor->add_flag("--json", as_json, "Print JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  try {
    if (*list) return cmd_list(as_json);
    if (*show) return cmd_show(name, as_json);
    if (*watch) return cmd_watch(prefix, interval, iterations);
    if (*gc) return cmd_gc(dry_run, include_invalid, force, as_json);
    if (*doctor) return cmd_doctor(as_json);
  } catch (const shmbus::Error& e) {
    return report_error(e, as_json);
  }
  return kUsage;
}
