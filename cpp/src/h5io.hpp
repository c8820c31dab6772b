// Reading lhcml flat HDF5 files (the training-dataset-dumper layout, docs/data.md) and writing
// the score file, with the HDF5 C API.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <string>
#include <vector>

namespace lhcml {

// One input group of the model as stored in the file: a 1-D structured dataset (``jets``) or a
// 2-D one with a ``valid`` field (``tracks``: n_jets x n_slots).
struct GroupReader {
  std::string group;                   // dataset name in the file
  std::vector<std::string> variables;  // fields read, in the model's order
  bool object = false;                 // 2-D (per-object) dataset with ``valid``
  hsize_t n_rows = 0;                  // first dimension (jets)
  hsize_t n_slots = 1;                 // second dimension for objects
};

// An open lhcml file; closes on destruction.
class H5Input {
 public:
  explicit H5Input(const std::string& path);
  ~H5Input();
  H5Input(const H5Input&) = delete;
  H5Input& operator=(const H5Input&) = delete;

  // Check that ``group`` exists with every variable (and ``valid`` for objects); the error lists
  // what the file has.
  GroupReader inspect(const std::string& group, const std::vector<std::string>& variables,
                      bool object) const;

  // Rows [start, start+count) of a group: features (count x [n_slots x] n_var, float32, as
  // lhcml's datamodule reads them: every numeric field converted to float) and, for objects,
  // ``valid`` (count x n_slots, 1 = real object). Non-finite features of real objects (of jets
  // for a jet group) are an InputError naming the variable, as in lhcml.train.datamodule.
  void read(const GroupReader& g, hsize_t start, hsize_t count, std::vector<float>& features,
            std::vector<unsigned char>& valid) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  hid_t file_ = -1;
};

// Write ``scores`` (n_rows x names.size(), row-major) as a 1-D structured dataset ``jets`` with
// one float32 field per name (the prediction columns, e.g. GN2_pb) plus string attributes on
// the file, atomically: to a temporary name in the same folder, renamed at the end; optional
// 1-D float64 datasets ``run_seconds`` / ``run_cpu_seconds`` (wall / thread-CPU time of each
// batch's call, with --timing; not written when empty).
void write_scores(const std::string& path, const std::vector<std::string>& names,
                  const std::vector<float>& scores, std::size_t n_rows,
                  const std::vector<std::pair<std::string, std::string>>& attrs,
                  const std::vector<double>& run_seconds, const std::vector<double>& run_cpu_seconds);

}  // namespace lhcml
