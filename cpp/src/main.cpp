// lhcml-infer: evaluate an lhcml-exported ONNX tagger on the jets of an lhcml flat HDF5 file.
//
//   lhcml-infer MODEL.onnx INPUT.h5 OUTPUT.h5 [--batch N] [--threads T] [--max-jets N] [--timing] [--force]
//
// Exit codes: 0 done; 2 bad input (model without lhcml metadata, variable missing from the
// file, unreadable file, bad option), one message on stderr and no output file; 1 anything else.
#include <dlfcn.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "errors.hpp"
#include "h5io.hpp"
#include "model.hpp"

#ifndef LHCML_INFER_VERSION
#define LHCML_INFER_VERSION "0"
#endif

namespace {

const char* kUsage =
    "usage: lhcml-infer MODEL.onnx INPUT.h5 OUTPUT.h5 [--batch N] [--threads T] [--max-jets N] [--timing] [--force]\n"
    "\n"
    "Evaluate a tagger exported by `lhcml export` (ONNX with lhcml's metadata: input variables,\n"
    "normalisation folded into the graph, output classes, lhcml version) on the jets of an lhcml\n"
    "flat HDF5 file (training-dataset-dumper layout: `jets`, and per-jet `tracks` etc. with `valid`),\n"
    "with ONNX Runtime's C++ API on the CPU.\n"
    "\n"
    "OUTPUT.h5 gets a 1-D structured dataset `jets` with one float32 field per model output\n"
    "(e.g. GN2_pb, GN2_pc, GN2_pu), row i = jet i of INPUT.h5, and the model's metadata as attributes.\n"
    "\n"
    "  --batch N      jets per ONNX Runtime call (default 1000)\n"
    "  --threads T    intra-op threads (default 1)\n"
    "  --max-jets N   evaluate only the first N jets (default: all)\n"
    "  --timing       also store the wall and thread-CPU time of every batch's call (datasets\n"
    "                 `run_seconds`, `run_cpu_seconds`)\n"
    "  --force        overwrite OUTPUT.h5 if it exists\n"
    "\n"
    "LHCML_INFER_HDF5_ERRORS=1 in the environment prints HDF5's own error stack too.\n"
    "\n"
    "Exit code 2 (one message, no output written): model not exported by lhcml (metadata missing),\n"
    "a variable missing from INPUT.h5, an unreadable file or a bad option.\n";

long parse_positive(const std::string& opt, const std::string& value) {
  char* end = nullptr;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < 1) throw lhcml::InputError(opt + " needs a positive integer, got '" + value + "'");
  return v;
}

// CPU time of the calling thread (with one intra-op thread ONNX Runtime computes on it): unlike
// wall time, it does not count the time the thread waits for a core on a shared machine.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string json_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + v[i] + "\"";
  return s + "]";
}

int run(int argc, char** argv) {
  std::vector<std::string> pos;
  // defaults (our choice): 1000 jets per call, as lhcml.export.onnx's throughput figure; one thread
  long batch = 1000, threads = 1, max_jets = -1;
  bool timing = false, force = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& opt) -> std::string {
      if (i + 1 >= argc) throw lhcml::InputError(opt + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--batch") {
      batch = parse_positive(a, value(a));
    } else if (a == "--threads") {
      threads = parse_positive(a, value(a));
    } else if (a == "--max-jets") {
      max_jets = parse_positive(a, value(a));
    } else if (a == "--timing") {
      timing = true;
    } else if (a == "--force") {
      force = true;
    } else if (a.rfind("--", 0) == 0) {
      throw lhcml::InputError("unknown option " + a + " (see --help)");
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 3) throw lhcml::InputError("expected MODEL.onnx INPUT.h5 OUTPUT.h5 (see --help)");
  const std::string model_path = pos[0], input_path = pos[1], output_path = pos[2];
  if (!force && access(output_path.c_str(), F_OK) == 0)
    throw lhcml::InputError(output_path + " exists; pass --force to overwrite it");

  const std::string ort_version = lhcml::init_onnxruntime();
  lhcml::Model model(model_path, static_cast<int>(threads));
  lhcml::H5Input input(input_path);

  // one reader per file group the model needs; all groups must have the same number of jets
  std::map<std::string, lhcml::GroupReader> groups;
  for (const auto& s : model.inputs()) {
    if (s.mask || groups.count(s.group)) continue;
    groups[s.group] = input.inspect(s.group, s.variables, s.object);
  }
  hsize_t n_jets = groups.begin()->second.n_rows;
  for (const auto& [name, g] : groups)
    if (g.n_rows != n_jets)
      throw lhcml::InputError("groups of " + input_path + " have different lengths ('" + groups.begin()->first + "' " +
                              std::to_string(n_jets) + ", '" + name + "' " + std::to_string(g.n_rows) + ")");
  if (max_jets > 0) n_jets = std::min<hsize_t>(n_jets, static_cast<hsize_t>(max_jets));

  const std::size_t n_out = model.outputs().size();
  std::vector<float> scores(static_cast<std::size_t>(n_jets) * n_out);
  std::vector<double> run_seconds, run_cpu_seconds;
  // read chunks of whole batches, about 10 000 jets at a time (our choice: ~34 MB of float track
  // features at 40 slots x 20 variables; large reads amortise HDF5's per-call and filter cost),
  // then evaluate them batch by batch
  const hsize_t chunk = static_cast<hsize_t>(batch) * std::max<hsize_t>(1, 10000 / static_cast<hsize_t>(batch));
  std::map<std::string, std::vector<float>> feats;
  std::map<std::string, std::vector<unsigned char>> masks;
  std::map<std::string, std::size_t> slots;
  for (hsize_t start = 0; start < n_jets; start += chunk) {
    const hsize_t count = std::min(chunk, n_jets - start);
    std::map<std::string, std::vector<float>*> fp;
    std::map<std::string, std::vector<unsigned char>*> mp;
    for (const auto& [name, g] : groups) {
      input.read(g, start, count, feats[name], masks[name]);
      fp[name] = &feats[name];
      mp[name] = &masks[name];
      slots[name] = static_cast<std::size_t>(g.n_slots);
    }
    for (hsize_t b0 = 0; b0 < count; b0 += static_cast<hsize_t>(batch)) {
      const hsize_t nb = std::min<hsize_t>(static_cast<hsize_t>(batch), count - b0);
      const auto t0 = std::chrono::steady_clock::now();
      const double c0 = timing ? thread_cpu_seconds() : 0.0;
      model.run(static_cast<std::size_t>(nb), fp, mp, slots, static_cast<std::size_t>(b0),
                scores.data() + static_cast<std::size_t>(start + b0) * n_out);
      if (timing) {
        run_cpu_seconds.push_back(thread_cpu_seconds() - c0);
        run_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    }
  }

  const auto& meta = model.metadata();
  std::vector<std::pair<std::string, std::string>> attrs = {
      {"producer", "lhcml-infer"},
      {"lhcml_infer_version", LHCML_INFER_VERSION},
      {"onnxruntime_version", ort_version},
      {"model", model_path},
      {"input", input_path},
      {"lhcml_version", meta.at("lhcml_version")},
      {"tagger_name", meta.at("tagger_name")},
      {"class_names", meta.at("class_names")},
      {"outputs", json_list(model.outputs())},
  };
  if (meta.count("model_name")) attrs.emplace_back("model_name", meta.at("model_name"));
  lhcml::write_scores(output_path, model.outputs(), scores, static_cast<std::size_t>(n_jets), attrs, run_seconds, run_cpu_seconds);
  std::cerr << "lhcml-infer: " << n_jets << " jets of " << input_path << " -> " << output_path << " ("
            << meta.at("tagger_name") << ", lhcml " << meta.at("lhcml_version") << ", onnxruntime " << ort_version << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // lhcml writes lzf-compressed files; HDF5 reads them through Debian's hdf5-plugin-lzf, whose
  // bookworm build (3.7.0-8) calls lzf_decompress without linking liblzf (no DT_NEEDED: the
  // dlopen fails with "undefined symbol: lzf_decompress"). Loading liblzf (Debian liblzf1) into
  // the global scope first resolves it; if liblzf is absent, the read error names the package.
  dlopen("liblzf.so.1", RTLD_NOW | RTLD_GLOBAL);
  // HDF5's error stack is replaced by our messages (LHCML_INFER_HDF5_ERRORS=1 prints it, to debug)
  if (std::getenv("LHCML_INFER_HDF5_ERRORS") == nullptr) H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    return run(argc, argv);
  } catch (const lhcml::InputError& e) {
    std::cerr << "lhcml-infer: error: " << e.what() << "\n";
    return 2;
  } catch (const Ort::Exception& e) {
    std::cerr << "lhcml-infer: ONNX Runtime failed: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "lhcml-infer: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
