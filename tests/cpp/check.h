// A tiny self-contained test harness, so the C++ tests need no download (no GoogleTest).
//
// TEST_CASE(group, name) { ... CHECK(...); CHECK_EQ(a, b); CHECK_NEAR(a, b, tol); }
// A failed check prints file:line and the values, counts the failure and the test goes on, so one
// run shows every failure. `core_tests GROUP...` runs the named groups (or `group.name` tests),
// `core_tests` alone runs everything, `core_tests --list` lists the tests, and
// `core_tests --expect-groups G...` fails if some registered group is not among G. The exit
// status is non-zero if any check failed, a test threw, or an argument matched no test.
#pragma once

#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace check {

inline int& failure_count() {
  static int count = 0;
  return count;
}

inline void fail(const char* file, int line, const std::string& what) {
  ++failure_count();
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

// Enough digits to tell floats (and most doubles) apart in a failure message.
template <typename T>
std::string show(const T& value) {
  std::ostringstream out;
  out.precision(10);
  out << value;
  return out.str();
}

template <typename T>
std::string show(const std::vector<T>& values) {
  std::string out = "[";
  for (size_t k = 0; k < values.size(); ++k) out += (k ? ", " : "") + show(values[k]);
  return out + "]";
}

struct TestCase {
  std::string group;
  std::string name;
  void (*fn)();
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* group, const char* name, void (*fn)()) {
    registry().push_back({group, name, fn});
  }
};

inline bool selected(const TestCase& t, const std::string& arg) {
  return arg == t.group || arg == t.group + "." + t.name;
}

inline int run_tests(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--list") {
    for (const TestCase& t : registry()) std::printf("%s.%s\n", t.group.c_str(), t.name.c_str());
    return 0;
  }
  if (!args.empty() && args[0] == "--expect-groups") {  // every registered group is listed
    int unlisted = 0;
    for (const TestCase& t : registry()) {
      bool listed = false;
      for (size_t k = 1; k < args.size(); ++k) listed = listed || args[k] == t.group;
      if (!listed) {
        std::fprintf(stderr, "test %s.%s: group not run by ctest (add it to the CMake list)\n",
                     t.group.c_str(), t.name.c_str());
        ++unlisted;
      }
    }
    return unlisted == 0 ? 0 : 1;
  }
  for (const std::string& arg : args) {
    bool any = false;
    for (const TestCase& t : registry()) any = any || selected(t, arg);
    if (!any) {
      std::fprintf(stderr, "no test matches '%s' (see --list)\n", arg.c_str());
      return 2;
    }
  }
  int run = 0, failed_tests = 0;
  for (const TestCase& t : registry()) {
    bool wanted = args.empty();
    for (const std::string& arg : args) wanted = wanted || selected(t, arg);
    if (!wanted) continue;
    const int before = failure_count();
    std::printf("[ RUN    ] %s.%s\n", t.group.c_str(), t.name.c_str());
    std::fflush(stdout);
    try {
      t.fn();
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, "uncaught exception: " + std::string(e.what()));
    } catch (...) {
      fail(__FILE__, __LINE__, "uncaught non-standard exception");
    }
    const bool ok = failure_count() == before;
    std::printf("[ %s ] %s.%s\n", ok ? "    OK" : "FAILED", t.group.c_str(), t.name.c_str());
    ++run;
    failed_tests += ok ? 0 : 1;
  }
  std::printf("%d test(s) run, %d failed, %d failed check(s)\n", run, failed_tests,
              failure_count());
  return failure_count() == 0 ? 0 : 1;
}

}  // namespace check

#define TEST_CASE(group, name)                                                               \
  static void test_##group##_##name();                                                       \
  static const ::check::Registrar registrar_##group##_##name(#group, #name,                  \
                                                             &test_##group##_##name);        \
  static void test_##group##_##name()

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) ::check::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define CHECK_EQ(a, b)                                                                       \
  do {                                                                                       \
    const auto& check_a_ = (a);                                                              \
    const auto& check_b_ = (b);                                                              \
    if (!(check_a_ == check_b_)) {                                                           \
      ::check::fail(__FILE__, __LINE__,                                                      \
                    "CHECK_EQ(" #a ", " #b "): " + ::check::show(check_a_) + " vs " +        \
                        ::check::show(check_b_));                                            \
    }                                                                                        \
  } while (0)

// |a - b| <= tol, computed in double; a NaN on either side fails.
#define CHECK_NEAR(a, b, tol)                                                                \
  do {                                                                                       \
    const double check_a_ = static_cast<double>(a);                                          \
    const double check_b_ = static_cast<double>(b);                                          \
    if (!(std::fabs(check_a_ - check_b_) <= static_cast<double>(tol))) {                     \
      ::check::fail(__FILE__, __LINE__,                                                      \
                    "CHECK_NEAR(" #a ", " #b ", " #tol "): " + ::check::show(check_a_) +     \
                        " vs " + ::check::show(check_b_));                                   \
    }                                                                                        \
  } while (0)
