// HDF5 input/output of lhcml-infer (see h5io.hpp).
#include "h5io.hpp"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "errors.hpp"

namespace lhcml {
namespace {

// Closes an HDF5 identifier with the right H5*close at scope exit.
struct Id {
  hid_t id;
  herr_t (*close)(hid_t);
  Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~Id() {
    if (id >= 0) close(id);
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  operator hid_t() const { return id; }
};

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::ostringstream s;
  for (std::size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

std::vector<std::string> root_names(hid_t file) {
  std::vector<std::string> names;
  H5G_info_t info;
  if (H5Gget_info(file, &info) < 0) return names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) continue;
    std::string name(static_cast<std::size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(len));
    names.push_back(name);
  }
  return names;
}

std::vector<std::string> member_names(hid_t type) {
  std::vector<std::string> names;
  const int n = H5Tget_nmembers(type);
  for (int i = 0; i < n; ++i) {
    char* name = H5Tget_member_name(type, static_cast<unsigned>(i));
    names.emplace_back(name);
    H5free_memory(name);
  }
  return names;
}

// How one field is read into memory: as native float (numbers), or with its own enum type
// (h5py stores numpy bools as an int8 enum FALSE/TRUE, which HDF5 does not convert to float).
struct Member {
  std::string name;
  hid_t mem_type = -1;  // owned
  std::size_t offset = 0, size = 0;
  bool is_enum = false, is_signed = false;
};

double enum_value(const unsigned char* p, const Member& m) {
  switch (m.size) {
    case 1: return m.is_signed ? *reinterpret_cast<const int8_t*>(p) : *p;
    case 2: { int16_t s; uint16_t u; std::memcpy(&s, p, 2); std::memcpy(&u, p, 2); return m.is_signed ? s : u; }
    case 4: { int32_t s; uint32_t u; std::memcpy(&s, p, 4); std::memcpy(&u, p, 4); return m.is_signed ? s : u; }
    default: { int64_t s; std::memcpy(&s, p, 8); return static_cast<double>(s); }
  }
}

}  // namespace

H5Input::H5Input(const std::string& path) : path_(path) {
  if (access(path.c_str(), R_OK) != 0)
    throw InputError("cannot read the input file " + path + ": " + std::strerror(errno));
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_h5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_h5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_h5 <= 0)
    throw InputError(path + " is not an HDF5 file (or is truncated); give an lhcml flat file");
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_ < 0) throw InputError("cannot open " + path + " as an HDF5 file");
}

H5Input::~H5Input() {
  if (file_ >= 0) H5Fclose(file_);
}

GroupReader H5Input::inspect(const std::string& group, const std::vector<std::string>& variables,
                             bool object) const {
  if (group.empty() || group.find('/') != std::string::npos || H5Lexists(file_, group.c_str(), H5P_DEFAULT) <= 0)
    throw InputError("input group '" + group + "' not in " + path_ + " (datasets: " + join(root_names(file_)) +
                     "); give a file with the model's inputs");
  Id ds(H5Dopen2(file_, group.c_str(), H5P_DEFAULT), H5Dclose);
  if (ds < 0) throw InputError("'" + group + "' in " + path_ + " is not a dataset");
  Id type(H5Dget_type(ds), H5Tclose);
  if (H5Tget_class(type) != H5T_COMPOUND)
    throw InputError("'" + group + "' in " + path_ + " is not a structured dataset (image inputs are not supported by lhcml-infer)");
  const auto fields = member_names(type);
  std::vector<std::string> missing;
  for (const auto& v : variables)
    if (H5Tget_member_index(type, v.c_str()) < 0) missing.push_back(v);
  if (!missing.empty()) {
    std::vector<std::string> avail;
    for (const auto& f : fields)
      if (f != "valid") avail.push_back(f);
    throw InputError("variable(s) [" + join(missing) + "] of group '" + group + "' not in " + path_ +
                     " (available: " + join(avail) + "); give a file with the model's input variables");
  }
  Id space(H5Dget_space(ds), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  hsize_t dims[2] = {0, 1};
  if (rank < 1 || rank > 2) throw InputError("'" + group + "' in " + path_ + " has " + std::to_string(rank) + " dimensions (1 or 2)");
  H5Sget_simple_extent_dims(space, dims, nullptr);
  if (object) {
    if (rank != 2) throw InputError("the model reads '" + group + "' as objects per jet, but it is 1-D in " + path_);
    if (H5Tget_member_index(type, "valid") < 0) throw InputError("'" + group + "' in " + path_ + " is 2-D but has no 'valid' field");
  } else if (rank != 1) {
    throw InputError("the model reads '" + group + "' as one row per jet, but it is 2-D in " + path_);
  }
  GroupReader g;
  g.group = group;
  g.variables = variables;
  g.object = object;
  g.n_rows = dims[0];
  g.n_slots = object ? dims[1] : 1;
  return g;
}

void H5Input::read(const GroupReader& g, hsize_t start, hsize_t count, std::vector<float>& features,
                   std::vector<unsigned char>& valid) const {
  Id ds(H5Dopen2(file_, g.group.c_str(), H5P_DEFAULT), H5Dclose);
  Id ftype(H5Dget_type(ds), H5Tclose);
  std::vector<std::string> names = g.variables;
  if (g.object) names.push_back("valid");
  std::vector<Member> members;
  std::size_t offset = 0;
  for (const auto& name : names) {
    Member m;
    m.name = name;
    Id mt(H5Tget_member_type(ftype, static_cast<unsigned>(H5Tget_member_index(ftype, name.c_str()))), H5Tclose);
    const H5T_class_t cls = H5Tget_class(mt);
    if (cls == H5T_ENUM) {
      m.mem_type = H5Tget_native_type(mt, H5T_DIR_ASCEND);
      m.is_enum = true;
      Id base(H5Tget_super(mt), H5Tclose);
      m.is_signed = H5Tget_sign(base) == H5T_SGN_2;
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
      m.mem_type = H5Tcopy(name == "valid" && g.object ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT);
    } else {
      for (auto& x : members) H5Tclose(x.mem_type);
      throw InputError("field '" + g.group + "." + name + "' of " + path_ + " is neither a number nor a boolean; lhcml-infer reads numeric fields");
    }
    m.size = H5Tget_size(m.mem_type);
    m.offset = offset;
    offset += m.size;
    members.push_back(m);
  }
  Id mtype(H5Tcreate(H5T_COMPOUND, offset), H5Tclose);
  for (const auto& m : members) H5Tinsert(mtype, m.name.c_str(), m.offset, m.mem_type);
  for (auto& m : members) H5Tclose(m.mem_type);

  const hsize_t n_slots = g.n_slots;
  const std::size_t n = static_cast<std::size_t>(count * n_slots);
  std::vector<unsigned char> buf(n * offset);
  Id fspace(H5Dget_space(ds), H5Sclose);
  const hsize_t fstart[2] = {start, 0}, fcount[2] = {count, n_slots};
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, fstart, nullptr, fcount, nullptr);
  const hsize_t mdims[1] = {static_cast<hsize_t>(n)};
  Id mspace(H5Screate_simple(1, mdims, nullptr), H5Sclose);
  if (n > 0 && H5Dread(ds, mtype, mspace, fspace, H5P_DEFAULT, buf.data()) < 0)
    throw InputError("cannot read rows " + std::to_string(start) + "-" + std::to_string(start + count) + " of '" + g.group +
                     "' in " + path_ + " (corrupt file, or a compression filter HDF5 cannot load: lhcml writes lzf, "
                     "install Debian's hdf5-plugin-lzf and liblzf1; LZ4 files need hdf5-filter-plugin)");

  const std::size_t n_var = g.variables.size();
  features.assign(n * n_var, 0.0f);
  valid.assign(g.object ? n : 0, 1);
  for (std::size_t r = 0; r < n; ++r) {
    const unsigned char* row = buf.data() + r * offset;
    if (g.object) {
      const Member& vm = members.back();
      valid[r] = (vm.is_enum ? enum_value(row + vm.offset, vm) : row[vm.offset]) != 0;
    }
    for (std::size_t k = 0; k < n_var; ++k) {
      const Member& m = members[k];
      float x;
      if (m.is_enum) {
        x = static_cast<float>(enum_value(row + m.offset, m));
      } else {
        std::memcpy(&x, row + m.offset, sizeof(float));
      }
      if (!std::isfinite(x) && (!g.object || valid[r])) {
        const hsize_t jet = start + r / n_slots;
        throw InputError("non-finite values in '" + g.group + "." + m.name + "' of " + path_ + " (jet " + std::to_string(jet) +
                         "); replace defaults/NaN in preprocessing");
      }
      features[r * n_var + k] = x;
    }
  }
}

void write_scores(const std::string& path, const std::vector<std::string>& names, const std::vector<float>& scores,
                  std::size_t n_rows, const std::vector<std::pair<std::string, std::string>>& attrs,
                  const std::vector<double>& run_seconds, const std::vector<double>& run_cpu_seconds) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = dir + "." + base + ".tmp" + std::to_string(getpid());
  bool ok = false;
  {
    Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file < 0) throw InputError("cannot create the output file in '" + (dir.empty() ? std::string(".") : dir) + "'");
    Id ctype(H5Tcreate(H5T_COMPOUND, names.size() * sizeof(float)), H5Tclose);
    for (std::size_t k = 0; k < names.size(); ++k) H5Tinsert(ctype, names[k].c_str(), k * sizeof(float), H5T_NATIVE_FLOAT);
    const hsize_t dims[1] = {n_rows};
    Id space(H5Screate_simple(1, dims, nullptr), H5Sclose);
    Id ds(H5Dcreate2(file, "jets", ctype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    bool good = ds >= 0 && (n_rows == 0 || H5Dwrite(ds, ctype, H5S_ALL, H5S_ALL, H5P_DEFAULT, scores.data()) >= 0);
    Id stype(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(stype, H5T_VARIABLE);
    H5Tset_cset(stype, H5T_CSET_UTF8);
    Id scalar(H5Screate(H5S_SCALAR), H5Sclose);
    for (const auto& [key, value] : attrs) {
      Id a(H5Acreate2(file, key.c_str(), stype, scalar, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const char* v = value.c_str();
      good = good && a >= 0 && H5Awrite(a, stype, &v) >= 0;
    }
    for (const auto& [name, values] : {std::make_pair("run_seconds", &run_seconds), std::make_pair("run_cpu_seconds", &run_cpu_seconds)}) {
      if (values->empty()) continue;
      const hsize_t td[1] = {values->size()};
      Id tspace(H5Screate_simple(1, td, nullptr), H5Sclose);
      Id t(H5Dcreate2(file, name, H5T_NATIVE_DOUBLE, tspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
      good = good && t >= 0 && H5Dwrite(t, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values->data()) >= 0;
    }
    ok = good;
  }
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw InputError("cannot write the output file " + path);
  }
}

}  // namespace lhcml
