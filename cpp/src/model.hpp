// An ONNX model exported by `lhcml export` (src/lhcml/export/onnx.py), run with ONNX Runtime's
// C++ API. The graph takes raw variables (the normalisation is folded into it) and returns one
// probability per class; its metadata_props name the inputs (file group + variables), outputs,
// classes, the normalisation and the lhcml version.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <map>
#include <string>
#include <vector>

namespace lhcml {

// Metadata keys every lhcml export writes (src/lhcml/export/onnx.py, "metadata_props").
extern const std::vector<std::string> kRequiredMetadata;

// One graph input: features of a group ((batch, F) for jets, (batch, n, F) for objects) or the
// bool validity mask (batch, n) of an object group.
struct InputSpec {
  std::string name;                    // ONNX input name, e.g. track_features
  std::string group;                   // dataset in the HDF5 file, e.g. tracks
  std::vector<std::string> variables;  // fields, in the order of the last axis
  bool object = false;                 // per-object (3-D features + mask)
  bool mask = false;                   // this input is the bool mask
};

// Initialise the C++ API from the loaded libonnxruntime (refuses a library older than the
// headers' C-API version); returns the library version string.
std::string init_onnxruntime();

class Model {
 public:
  Model(const std::string& path, int threads);

  const std::vector<InputSpec>& inputs() const { return inputs_; }
  const std::vector<std::string>& outputs() const { return outputs_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Run one batch: rows [offset_rows, offset_rows + batch) of ``features[g]`` (rows x [n_slots x] F)
  // and ``masks[g]`` (rows x n_slots) per group, ``n_slots[g]`` per object group; writes
  // batch x n_outputs scores (row-major) to ``scores``. Object slots that are padding in every
  // jet of the batch are dropped first (as lhcml's datamodule does; the graph masks padding).
  void run(std::size_t batch, const std::map<std::string, std::vector<float>*>& features,
           const std::map<std::string, std::vector<unsigned char>*>& masks,
           const std::map<std::string, std::size_t>& n_slots, std::size_t offset_rows, float* scores);

 private:
  std::string path_;
  Ort::Env env_;
  Ort::Session session_{nullptr};
  std::vector<InputSpec> inputs_;
  std::vector<std::string> outputs_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::vector<float>> scratch_f_;  // trimmed object batches
  std::map<std::string, std::vector<unsigned char>> scratch_m_;
};

}  // namespace lhcml
